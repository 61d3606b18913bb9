/// The Lua scripts behind the transitions a plain command cannot make safely. Each works on one key
/// at a time, and all but the completion take exactly one (`KEYS[1]`); the completion takes a
/// batch's keys and treats each as a call of its own would (see ``complete``), so a Redis Cluster
/// could run them all unchanged on one key per call, and each dates what it writes by
/// the server's clock (`TIME`, `PEXPIRETIME`; Redis 7 replicates scripts by effects, so a
/// non-deterministic command before a write is allowed), or by a server time the store was handed
/// before (the first claim's, which a lease carries), never by the client's clock.
///
/// Numbers are concatenated as Lua prints them (`%.14g`): exact for integers below 10^14, and every
/// time here is below that (milliseconds until the year 5138; durations saturate at 1,000 years);
/// a key whose expiry is not (someone else's, or none) is not taken for a record. If a key's expiry
/// moves later behind the scripts' back (an operator's `PEXPIRE`, the server's clock stepping back),
/// a rewritten record's `lease_span_ms` stops at 0 rather than going negative.
///
/// Records are strings in the layout of ``RecordValue``. An in-flight key's `PEXPIRETIME` is one
/// millisecond before the record's expiry (Redis drops a key once the time is past `PEXPIRETIME`,
/// and the store contract has a record gone from its expiry on), so an in-flight key that exists is
/// a live record. Its times are kept relative to that expiry (`retention_ms` before it the lease
/// ends, `lease_span_ms` before that it was first claimed), which is what lets a claim create the
/// record with a plain `SET … NX PX … GET` that knows no server time. A completed value carries
/// its own times and its key expires with it; one read past its expiry (its key's expiry moved
/// later behind the store's back) is taken for gone.
struct RedisScript: Sendable {
    let name: String
    let source: String
    let sha: String
    /// ``sha`` as bytes, for commands written in one pass.
    let shaBytes: [UInt8]

    init(name: String, source: String) {
        self.name = name
        self.source = source
        self.sha = SHA1.hexDigest(Array(source.utf8))
        self.shaBytes = Array(sha.utf8)
        self.callPrefix = RedisCommand("EVALSHA", sha, "1")
    }

    /// `EVALSHA <sha> 1`, the start of every call of the script.
    let callPrefix: RedisCommand

    private static let prelude = """
        local key = KEYS[1]
        local function now_ms()
          local t = redis.call('TIME')
          return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        end
        local function corrupt()
          return redis.error_reply('DEDUPCORRUPT the value at ' .. key .. ' is not a dedup record')
        end
        local counters = '^fencing=(%d+) attempt=(%d+) lease_span_ms=(%d+) retention_ms=(%d+) fp=()'
        -- Where an in-flight value's counters start, past its owner header
        -- (`in_flight label=<n>:<label> owner=<n>:<token> `; values written before labels were
        -- kept have no label); nil when the value is not one.
        local function counters_start(v)
          local p = 11
          local n, q = string.match(v, '^label=(%d+):()', p)
          if n then
            p = q + tonumber(n)
            if string.sub(v, p, p) ~= ' ' then return nil end
            p = p + 1
          end
          n, q = string.match(v, '^owner=(%d+):()', p)
          if not n then return nil end
          return q + tonumber(n) + 1
        end
        -- The broker time field (`b=<ms> `) at p, which only records claimed with one have: its
        -- digits (nil when absent) and where the counters start.
        local function broker_at(v, p)
          local b, q = string.match(v, '^b=(%d+) ()', p)
          if b then return b, q end
          return nil, p
        end
        -- A completed value's completion time and retention, read field by field past its
        -- fingerprint (which may hold anything); nil when the value is not one.
        local function completion_of(v)
          local _, c = broker_at(v, 11)
          local f, a, s, r, p = string.match(v, counters, c)
          if not f then return nil end
          if string.sub(v, p, p) == '-' then
            p = p + 1
          else
            local n, q = string.match(v, '^(%d+):()', p)
            if not n then return nil end
            p = q + tonumber(n)
          end
          local c, k = string.match(v, '^ created_ms=%d+ completed_ms=(%d+) kept_ms=(%d+) result=', p)
          if not c then return nil end
          return tonumber(c), tonumber(k)
        end

        """

    /// The start of every owner-checked script: the record as `v`, the owner header (ARGV[1]) as
    /// `head`, and 0 (lease lost) unless the record is in flight under that owner.
    private static let ownedValue = """
        local v = redis.call('GET', KEYS[1])
        local head = ARGV[1]
        if not v or string.sub(v, 1, #head) ~= head then return 0 end

        """

    /// Run when the claim's `SET … NX GET` found an in-flight record, or a completed one past its
    /// expiry: decides, atomically, between a live lease, a payload mismatch and a takeover;
    /// creates the record if it is gone by now (a completed key outlives its record only when its
    /// expiry was moved later behind the store's back).
    ///
    /// ARGV: the new in-flight value, its owner header, lease_ms, retention_ms, the request's
    /// encoded fingerprint. Returns {0, lease_until, created_ms} created, {1, fencing, attempt,
    /// lease_until, created_ms} taken over, {2, value} completed, {3, value, expires_ms} in flight
    /// (held, or a different fingerprint: the caller compares).
    static let claim = RedisScript(
        name: "claim",
        source: prelude + """
            local v = redis.call('GET', key)
            local now = now_ms()
            local lease = tonumber(ARGV[3])
            local retention = tonumber(ARGV[4])
            if v and string.sub(v, 1, 10) == 'completed ' then
              local completed, kept = completion_of(v)
              if not completed then return corrupt() end
              if now < completed + kept then return {2, v} end
              v = nil
            end
            if v then
              local c = counters_start(v)
              if not c then return corrupt() end
              -- The broker time field (or nothing) runs from the owner header's end to the counters.
              local _, field_end = broker_at(v, c)
              local broker_field = string.sub(v, c, field_end - 1)
              local f, a, s, r, t = string.match(v, counters, field_end)
              local e = redis.call('PEXPIRETIME', key)
              if not f or e < 0 or e > 1e14 then return corrupt() end
              e = e + 1
              local lease_until = e - tonumber(r)
              local fp = string.sub(v, t)
              if now < lease_until or (ARGV[5] ~= '-' and fp ~= '-' and ARGV[5] ~= fp) then return {3, v, e} end
              if fp == '-' then fp = ARGV[5] end
              local created = lease_until - tonumber(s)
              local fencing = tonumber(f) + 1
              local attempt = tonumber(a) + 1
              local new_until = now + lease
              -- A takeover keeps the broker time of the claim that created the record.
              redis.call('SET', key, ARGV[2] .. broker_field .. 'fencing=' .. fencing .. ' attempt=' .. attempt ..
                ' lease_span_ms=' .. math.max(0, new_until - created) .. ' retention_ms=' .. ARGV[4] .. ' fp=' .. fp,
                'PXAT', new_until + retention - 1)
              -- The first claim as the rewritten record has it (its span stops at 0 if the clock stepped back).
              return {1, fencing, attempt, new_until, new_until - math.max(0, new_until - created)}
            end
            local new_until = now + lease
            redis.call('SET', key, ARGV[1], 'PXAT', new_until + retention - 1)
            return {0, new_until, now}
            """
    )

    /// Completes one key or a batch of them: KEYS are the records, ARGV the retention in
    /// milliseconds (`kept_ms`), then three per key: its owner header, its encoded result, and the
    /// first claim's time (Unix ms, as the lease carries it; empty when it does not). Returns one
    /// answer per key, in order: 1 completed, 0 lease lost, or that key's error (`DEDUPCORRUPT` for
    /// a value that cannot be read, `WRONGTYPE` for another kind of value at the key); a key's
    /// error does not stop the keys after it.
    ///
    /// Each key goes through the same owner-checked transition a call of its own would make; a batch
    /// in one call shares the script's fixed cost (the call, its arguments, `TIME`), which is most
    /// of a completion's cost on the server: a per-key call costs about 4 µs more server time per
    /// key. All keys of a call are completed at the one instant the script runs in. A Redis Cluster
    /// (or a proxy) that refuses keys of different hash slots in one script gets one key per call
    /// (``RedisDedupStore/Configuration/completesBatchesInOneScript``); the data is the same.
    ///
    /// Kept as cheap as it can be (it runs for every processed message): every command, and every
    /// number Lua converts or formats, costs about as much as the owner check. So the first
    /// claim's time comes with the call (the lease knows it) rather than from the key's expiry, and
    /// the completion time is spliced from `TIME`'s digits; the one number formatted is the keys'
    /// expiry, once per call. The value keeps the in-flight fields as they are and adds the first
    /// claim (`created_ms`), the completion time and the retention (`kept_ms`); the record expires
    /// at `completed_ms` + `kept_ms`, and so does its key (`PXAT` its last millisecond, whatever
    /// the server's version dates a relative expiry by, and however long the call runs).
    static let complete = RedisScript(
        name: "complete",
        source: """
            local kept = ARGV[1]
            local t = redis.call('TIME')
            local now = t[1] .. string.sub('00000' .. t[2], -6, -4)
            local last = string.format('%d', tonumber(now) + tonumber(kept) - 1)
            local answers = {}
            for i = 1, #KEYS do
              local key = KEYS[i]
              local head, result, created = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
              local v = redis.pcall('GET', key)
              if type(v) == 'table' then
                -- Another kind of value at the key (WRONGTYPE): this key's answer; the others go on.
                answers[i] = v
              elseif not v or string.sub(v, 1, #head) ~= head then
                answers[i] = 0
              else
                if created == '' then
                  -- A lease that does not say when its record was first claimed: from the key's expiry.
                  local p = string.match(v, '^b=%d+ ()', #head + 1) or #head + 1
                  local s, r = string.match(v, '^fencing=%d+ attempt=%d+ lease_span_ms=(%d+) retention_ms=(%d+) fp=', p)
                  local e = redis.call('PEXPIRETIME', key)
                  if s and e >= 0 and e <= 1e14 then created = string.format('%d', math.max(0, e + 1 - r - s)) end
                end
                if created == '' then
                  answers[i] = redis.error_reply('DEDUPCORRUPT the value at ' .. key .. ' is not a dedup record')
                else
                  redis.call('SET', key, 'completed ' .. string.sub(v, #head + 1) .. ' created_ms=' .. created ..
                    ' completed_ms=' .. now .. ' kept_ms=' .. kept .. ' result=' .. result, 'PXAT', last)
                  answers[i] = 1
                end
              end
            end
            return answers
            """
    )

    /// ARGV: owner header. Returns 1 released (deleted), 0 lease lost.
    static let release = RedisScript(
        name: "release",
        source: ownedValue + """
            redis.call('DEL', KEYS[1])
            return 1
            """
    )

    /// ARGV: owner header, duration_ms. Returns {1, lease_until} renewed, 0 lease lost. The record
    /// keeps its retention after the lease and its first-claim time.
    static let renew = RedisScript(
        name: "renew",
        source: prelude + ownedValue + """
            local _, c = broker_at(v, #head + 1)
            local f, a, s, r, t = string.match(v, counters, c)
            local e = redis.call('PEXPIRETIME', key)
            if not f or e < 0 or e > 1e14 then return corrupt() end
            local now = now_ms()
            if now > e then return 0 end
            local created = e + 1 - tonumber(r) - tonumber(s)
            local new_until = now + tonumber(ARGV[2])
            redis.call('SET', key, head .. string.sub(v, #head + 1, c - 1) .. 'fencing=' .. f .. ' attempt=' .. a .. ' lease_span_ms=' .. math.max(0, new_until - created) ..
              ' retention_ms=' .. r .. ' fp=' .. string.sub(v, t), 'PXAT', new_until + tonumber(r) - 1)
            return {1, new_until}
            """
    )

    /// A record and its key's expiry, read together: {value or nil, PEXPIRETIME}.
    static let read = RedisScript(
        name: "read",
        source: """
            return {redis.call('GET', KEYS[1]), redis.call('PEXPIRETIME', KEYS[1])}
            """
    )

    /// ARGV: state ('' any), from_ms ('' none), until_ms ('' none). Deletes the record if it
    /// matches (by its broker time `b=` where it has one, else by its record time: completed_ms
    /// when completed, else the first claim); returns 1 or 0.
    static let conditionalDelete = RedisScript(
        name: "delete",
        source: prelude + """
            local v = redis.call('GET', key)
            if not v then return 0 end
            if ARGV[1] == '' and ARGV[2] == '' and ARGV[3] == '' and
              (string.sub(v, 1, 10) == 'completed ' or string.sub(v, 1, 10) == 'in_flight ') then
              -- No filter (forget): a record of ours goes even if it cannot be read any more.
              redis.call('DEL', key)
              return 1
            end
            local state, time
            if string.sub(v, 1, 10) == 'completed ' then
              state = 'completed'
              local b = broker_at(v, 11)
              time = completion_of(v)
              if time and b then time = tonumber(b) end
            else
              local c = counters_start(v)
              if not c then return 0 end
              local b
              b, c = broker_at(v, c)
              local f, a, s, r = string.match(v, counters, c)
              local e = redis.call('PEXPIRETIME', key)
              if not f or e < 0 or e > 1e14 then return 0 end
              state = 'in_flight'
              time = b and tonumber(b) or e + 1 - tonumber(r) - tonumber(s)
            end
            if not time then return 0 end
            if ARGV[1] ~= '' and state ~= ARGV[1] then return 0 end
            if ARGV[2] ~= '' and time < tonumber(ARGV[2]) then return 0 end
            if ARGV[3] ~= '' and time >= tonumber(ARGV[3]) then return 0 end
            redis.call('DEL', key)
            return 1
            """
    )

    /// Every script, in the order connections load them.
    static let all: [RedisScript] = [claim, complete, release, renew, read, conditionalDelete]
}
