/// The Lua scripts behind every state transition. Each touches exactly one key (`KEYS[1]`), so a
/// Redis Cluster could run them unchanged, and reads the time from the server (`TIME`; Redis 7
/// replicates scripts by effects, so a non-deterministic command before a write is allowed), never
/// from the client.
///
/// Times are integer milliseconds. A record whose `expires_ms` has come is treated as absent even
/// if Redis has not removed it yet (Redis expires a key only once `now > PEXPIREAT`; the contract
/// says a record is live while `now < expires_ms`).
struct RedisScript: Sendable {
    let name: String
    let source: String
    let sha: String

    init(name: String, source: String) {
        self.name = name
        self.source = source
        self.sha = SHA1.hexDigest(Array(source.utf8))
        self.callPrefix = RedisCommand("EVALSHA", sha, "1")
    }

    /// `EVALSHA <sha> 1`, the start of every call of the script.
    let callPrefix: RedisCommand

    private static let prelude = """
        local key = KEYS[1]
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

        """

    /// ARGV: owner, lease_ms, retention_ms, has_fp ('1'/'0'), fp.
    /// Returns {0, fencing, attempt, lease_until} acquired, {1, ...} taken over, or
    /// {2 duplicate | 3 in flight | 4 fingerprint mismatch, state, owner, fencing, attempt,
    /// created_ms, lease_until_ms, completed_ms, expires_ms, fp, result}.
    static let claim = RedisScript(
        name: "claim",
        source: prelude + """
            local lease = tonumber(ARGV[2])
            local retention = tonumber(ARGV[3])
            local fp = false
            if ARGV[4] == '1' then fp = ARGV[5] end
            local r = redis.call('HMGET', key, 'state', 'owner', 'fencing', 'attempt', 'created_ms',
                'lease_until_ms', 'completed_ms', 'expires_ms', 'fp', 'result')
            local state = r[1]
            if state then
              local expires = tonumber(r[8])
              if (state ~= 'in_flight' and state ~= 'completed') or not expires or not tonumber(r[3]) then
                return redis.error_reply('DEDUPCORRUPT the hash at ' .. key .. ' is not a dedup record')
              end
              if expires <= now then
                redis.call('DEL', key)
                state = false
              end
            elseif redis.call('EXISTS', key) == 1 then
              return redis.error_reply('DEDUPCORRUPT the hash at ' .. key .. ' is not a dedup record')
            end
            if not state then
              local lease_until = now + lease
              local expires_at = lease_until + retention
              if fp then
                redis.call('HSET', key, 'state', 'in_flight', 'owner', ARGV[1], 'fencing', 1, 'attempt', 1,
                  'created_ms', now, 'lease_until_ms', lease_until, 'expires_ms', expires_at, 'fp', fp)
              else
                redis.call('HSET', key, 'state', 'in_flight', 'owner', ARGV[1], 'fencing', 1, 'attempt', 1,
                  'created_ms', now, 'lease_until_ms', lease_until, 'expires_ms', expires_at)
              end
              redis.call('PEXPIREAT', key, expires_at)
              return {0, 1, 1, lease_until}
            end
            if fp and r[9] and r[9] ~= fp then
              return {4, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10]}
            end
            if state == 'completed' then
              return {2, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10]}
            end
            local held_until = tonumber(r[6])
            if held_until and now < held_until then
              return {3, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10]}
            end
            local fencing = tonumber(r[3]) + 1
            local attempt = (tonumber(r[4]) or 0) + 1
            local lease_until = now + lease
            local expires_at = lease_until + retention
            if fp and not r[9] then
              redis.call('HSET', key, 'owner', ARGV[1], 'fencing', fencing, 'attempt', attempt,
                'lease_until_ms', lease_until, 'expires_ms', expires_at, 'fp', fp)
            else
              redis.call('HSET', key, 'owner', ARGV[1], 'fencing', fencing, 'attempt', attempt,
                'lease_until_ms', lease_until, 'expires_ms', expires_at)
            end
            redis.call('PEXPIREAT', key, expires_at)
            return {1, fencing, attempt, lease_until}
            """
    )

    /// ARGV: owner, retention_ms, has_result ('1'/'0'), result. Returns 1 completed, 0 lease lost.
    static let complete = RedisScript(
        name: "complete",
        source: prelude + """
            local r = redis.call('HMGET', key, 'state', 'owner', 'expires_ms')
            local expires = tonumber(r[3])
            if r[1] ~= 'in_flight' or r[2] ~= ARGV[1] or not expires or expires <= now then return 0 end
            local expires_at = now + tonumber(ARGV[2])
            if ARGV[3] == '1' then
              redis.call('HDEL', key, 'owner', 'lease_until_ms')
              redis.call('HSET', key, 'state', 'completed', 'completed_ms', now, 'expires_ms', expires_at, 'result', ARGV[4])
            else
              redis.call('HDEL', key, 'owner', 'lease_until_ms', 'result')
              redis.call('HSET', key, 'state', 'completed', 'completed_ms', now, 'expires_ms', expires_at)
            end
            redis.call('PEXPIREAT', key, expires_at)
            return 1
            """
    )

    /// ARGV: owner. Returns 1 released (deleted), 0 lease lost.
    static let release = RedisScript(
        name: "release",
        source: prelude + """
            local r = redis.call('HMGET', key, 'state', 'owner', 'expires_ms')
            local expires = tonumber(r[3])
            if r[1] ~= 'in_flight' or r[2] ~= ARGV[1] or not expires or expires <= now then return 0 end
            redis.call('DEL', key)
            return 1
            """
    )

    /// ARGV: owner, duration_ms. Returns {1, lease_until} renewed, 0 lease lost. The record keeps
    /// the same distance between lease end and expiry (the retention the claim gave it).
    static let renew = RedisScript(
        name: "renew",
        source: prelude + """
            local r = redis.call('HMGET', key, 'state', 'owner', 'expires_ms', 'lease_until_ms')
            local expires = tonumber(r[3])
            local held_until = tonumber(r[4])
            if r[1] ~= 'in_flight' or r[2] ~= ARGV[1] or not expires or expires <= now or not held_until then return 0 end
            local lease_until = now + tonumber(ARGV[2])
            local expires_at = lease_until + (expires - held_until)
            redis.call('HSET', key, 'lease_until_ms', lease_until, 'expires_ms', expires_at)
            redis.call('PEXPIREAT', key, expires_at)
            return {1, lease_until}
            """
    )

    /// ARGV: state ('' any), from_ms ('' none), until_ms ('' none). Deletes the live record if it
    /// matches (record time = completed_ms when completed, else created_ms); returns 1 or 0.
    static let conditionalDelete = RedisScript(
        name: "delete",
        source: prelude + """
            local r = redis.call('HMGET', key, 'state', 'created_ms', 'completed_ms', 'expires_ms')
            local expires = tonumber(r[4])
            if not r[1] or not expires or expires <= now then return 0 end
            if ARGV[1] ~= '' and r[1] ~= ARGV[1] then return 0 end
            local time = tonumber(r[3] or r[2])
            if not time then return 0 end
            if ARGV[2] ~= '' and time < tonumber(ARGV[2]) then return 0 end
            if ARGV[3] ~= '' and time >= tonumber(ARGV[3]) then return 0 end
            redis.call('DEL', key)
            return 1
            """
    )

    /// Every script, in the order connections load them.
    static let all: [RedisScript] = [claim, complete, release, renew, conditionalDelete]
}
