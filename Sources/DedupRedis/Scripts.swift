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
/// a rewritten record's lease span stops at 0 rather than going negative.
///
/// Records are strings in the layout of ``RecordValue``. An in-flight key's `PEXPIRETIME` is one
/// millisecond before the record's expiry (Redis drops a key once the time is past `PEXPIRETIME`,
/// and the store contract has a record gone from its expiry on), so an in-flight key that exists is
/// a live record. Its times are kept relative to that expiry (its retention before it the lease
/// ends, its lease span before that it was first claimed), which is what lets a claim create the
/// record with a plain `SET … NX PX … GET` that knows no server time. A completed value carries
/// its own times and its key expires with it; one read past its expiry (its key's expiry moved
/// later behind the store's back) is taken for gone. Values in the layout before
/// (``LegacyRecordValue``) are read by every script, and rewritten in the current one by every
/// transition that rewrites a record.
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

    /// The start of every script of one key: the key, the server's time, the corrupt-value error.
    private static let prelude = """
        local key = KEYS[1]
        local function now_ms()
          local t = redis.call('TIME')
          return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        end
        local function corrupt()
          return redis.error_reply('DEDUPCORRUPT the value at ' .. key .. ' is not a dedup record')
        end

        """

    /// Owner headers, of ``RecordValue``'s layout and of ``LegacyRecordValue``'s: the owner check,
    /// and where a value's fields start past its header.
    private static let ownerCheck = """
        -- Whether a value is in flight in the earlier layout (`in_flight label=…` or `in_flight owner=…`).
        local function is_legacy(v)
          local w = string.sub(v, 11, 16)
          return string.sub(v, 1, 10) == 'in_flight ' and (w == 'label=' or w == 'owner=')
        end
        -- An owner header (`in_flight <n>:<label> <n>:<token> `, label `-` for none) as the earlier
        -- layout wrote it: `in_flight label=<n>:<label> owner=<n>:<token> `, or without the label.
        local function legacy_head(head)
          if string.sub(head, 11, 12) == '- ' then return 'in_flight owner=' .. string.sub(head, 13) end
          local n, q = string.match(head, '^(%d+):()', 11)
          if not n then return nil end
          local p = q + tonumber(n)
          return 'in_flight label=' .. string.sub(head, 11, p - 1) .. ' owner=' .. string.sub(head, p + 1)
        end
        -- Where the fields after the owner header start when v is in flight under head (in either
        -- layout), and whether v is in the earlier one; nil when it is not.
        local function owned_at(v, head)
          if string.sub(v, 1, #head) == head then return #head + 1, false end
          if is_legacy(v) then
            local old = legacy_head(head)
            if old and string.sub(v, 1, #old) == old then return #old + 1, true end
          end
          return nil
        end
        -- Where an in-flight value's fields start, past its owner header (whoever holds it), and
        -- whether it is in the earlier layout; nil when the value is not in flight.
        local function fields_at(v)
          if string.sub(v, 1, 10) ~= 'in_flight ' then return nil end
          local legacy = is_legacy(v)
          local p, n, q = 11
          if legacy then
            n, q = string.match(v, '^label=(%d+):()', p)
            if n then
              p = q + tonumber(n)
              if string.sub(v, p, p) ~= ' ' then return nil end
              p = p + 1
            end
            n, q = string.match(v, '^owner=(%d+):()', p)
          else
            if string.sub(v, p, p) == '-' then
              p = p + 1
            else
              n, q = string.match(v, '^(%d+):()', p)
              if not n then return nil end
              p = q + tonumber(n)
            end
            if string.sub(v, p, p) ~= ' ' then return nil end
            n, q = string.match(v, '^(%d+):()', p + 1)
          end
          if not n then return nil end
          p = q + tonumber(n)
          if string.sub(v, p, p) ~= ' ' then return nil end
          return p + 1, legacy
        end

        """

    /// Reading an in-flight value's fields (in either layout) and writing them in the current one.
    private static let inFlightFields = """
        -- A duration field ('1500', '30s', '1d') in milliseconds; nil when it is not one.
        local function duration(text)
          local n, u = string.match(text, '^(%d+)([smhd]?)$')
          if not n then return nil end
          n = tonumber(n)
          if u == 's' then return n * 1000 elseif u == 'm' then return n * 60000 end
          if u == 'h' then return n * 3600000 elseif u == 'd' then return n * 86400000 end
          return n
        end
        local function base36(n)
          local s = ''
          repeat
            local d = n % 36
            s = string.sub('0123456789abcdefghijklmnopqrstuvwxyz', d + 1, d + 1) .. s
            n = (n - d) / 36
          until n == 0
          return s
        end
        -- An in-flight value's fields from p (see fields_at): {span, retention (ms), retention_text,
        -- broker (ms or nil), b36 (its base 36 digits, or nil), fencing, attempt, fp ('-' or
        -- '<n>:<bytes>')}; nil when malformed.
        local function in_flight_fields(v, p, legacy)
          local r = {fp = '-'}
          if legacy then
            local b, q = string.match(v, '^b=(%d+) ()', p)
            if b then r.broker, p = tonumber(b), q end
            local f, a, s, t, q = string.match(v, '^fencing=(%d+) attempt=(%d+) lease_span_ms=(%d+) retention_ms=(%d+) fp=()', p)
            if not f then return nil end
            r.fencing, r.attempt, r.span, r.retention, r.retention_text = tonumber(f), tonumber(a), tonumber(s), tonumber(t), t
            r.fp = string.sub(v, q)
            return r
          end
          local s, t, q = string.match(v, '^(%d+[smhd]?) (%d+[smhd]?)()', p)
          if not s then return nil end
          r.span, r.retention, r.retention_text = duration(s), duration(t), t
          local b, f, a
          b, p = string.match(v, '^ b(%w+)()', q)
          if b then r.broker, r.b36 = tonumber(b, 36), b else p = q end
          f, q = string.match(v, '^ f(%d+)()', p)
          if f then p = q end
          r.fencing = tonumber(f or 1)
          a, q = string.match(v, '^ a(%d+)()', p)
          if a then p = q end
          r.attempt = tonumber(a) or r.fencing
          if p <= #v then
            local n
            n, q = string.match(v, '^ p(%d+):()', p)
            if not n or q + tonumber(n) ~= #v + 1 then return nil end
            r.fp = string.sub(v, p + 2)
          end
          if not r.span or not r.retention or not r.broker and b then return nil end
          return r
        end
        -- ' b<broker time> f<fencing> a<attempt> p<fingerprint>' as far as they say something.
        local function optional_fields(r, fencing, attempt, fp)
          local v = ''
          if r.broker then v = ' b' .. (r.b36 or base36(r.broker)) end
          if fencing ~= 1 then v = v .. ' f' .. fencing end
          if attempt ~= fencing then v = v .. ' a' .. attempt end
          if fp ~= '-' then v = v .. ' p' .. fp end
          return v
        end

        """

    /// Reading a completed value's times (in either layout).
    private static let completedTimes = """
        -- A completed value's completion time, expiry and broker time (ms; the last nil when it has
        -- none), in either layout; nil when the value is not one.
        local function completion_of(v)
          if string.sub(v, 1, 5) == 'done ' then
            local c, took, kept, q = string.match(v, '^done (%w+) (%-?%d+) (%d+[smhd]?)()')
            c = c and tonumber(c, 36)
            kept = kept and duration(kept)
            if not c or not kept then return nil end
            local wait = string.match(v, '^ b(%-?%d+)', q)
            return c + tonumber(took), c + tonumber(took) + kept, wait and c - tonumber(wait)
          end
          if string.sub(v, 1, 10) ~= 'completed ' then return nil end
          local b, p = string.match(v, '^b=(%d+) ()', 11)
          local f, q = string.match(v, '^fencing=(%d+) attempt=%d+ lease_span_ms=%d+ retention_ms=%d+ fp=()', p or 11)
          if not f then return nil end
          if string.sub(v, q, q) == '-' then
            q = q + 1
          else
            local n, r = string.match(v, '^(%d+):()', q)
            if not n then return nil end
            q = r + tonumber(n)
          end
          local c, k = string.match(v, '^ created_ms=%d+ completed_ms=(%d+) kept_ms=(%d+) result=', q)
          if not c then return nil end
          return tonumber(c), tonumber(c) + tonumber(k), b and tonumber(b)
        end

        """

    /// The start of every owner-checked script: the record as `v`, the owner header (ARGV[1]) as
    /// `head`, where the fields after the holder's header start as `p` and whether the value is in
    /// the earlier layout as `legacy`; 0 (lease lost) unless the record is in flight under that owner.
    private static let ownedValue = """
        local v = redis.call('GET', key)
        local head = ARGV[1]
        if not v then return 0 end
        local p, legacy = owned_at(v, head)
        if not p then return 0 end

        """

    /// Run when the claim's `SET … NX GET` found an in-flight record, or a completed one past its
    /// expiry: decides, atomically, between a live lease, a payload mismatch and a takeover;
    /// creates the record if it is gone by now (a completed key outlives its record only when its
    /// expiry was moved later behind the store's back). A takeover writes the current layout
    /// whichever layout it found, keeping the broker time of the claim that created the record.
    ///
    /// ARGV: the new in-flight value, its owner header, lease_ms, the retention as a duration field,
    /// the request's encoded fingerprint (`-` or `<n>:<bytes>`). Returns {0, lease_until,
    /// created_ms} created, {1, fencing, attempt, lease_until, created_ms} taken over, {2, value}
    /// completed, {3, value, expires_ms} in flight (held, or a different fingerprint: the caller
    /// compares).
    static let claim = RedisScript(
        name: "claim",
        source: prelude + ownerCheck + inFlightFields + completedTimes + """
            local v = redis.call('GET', key)
            local now = now_ms()
            local lease = tonumber(ARGV[3])
            local retention = duration(ARGV[4])
            if v and string.sub(v, 1, 10) ~= 'in_flight ' then
              local _, expires = completion_of(v)
              if not expires then return corrupt() end
              if now < expires then return {2, v} end
              v = nil
            end
            if v then
              local p, legacy = fields_at(v)
              local r = p and in_flight_fields(v, p, legacy)
              local e = redis.call('PEXPIRETIME', key)
              if not r or e < 0 or e > 1e14 then return corrupt() end
              e = e + 1
              local lease_until = e - r.retention
              if now < lease_until or (ARGV[5] ~= '-' and r.fp ~= '-' and ARGV[5] ~= r.fp) then return {3, v, e} end
              local fp = r.fp
              if fp == '-' then fp = ARGV[5] end
              local fencing, attempt = r.fencing + 1, r.attempt + 1
              local new_until = now + lease
              -- The first claim as the rewritten record has it (its span stops at 0 if the clock stepped back).
              local span = math.max(0, new_until - (lease_until - r.span))
              redis.call('SET', key, ARGV[2] .. span .. ' ' .. ARGV[4] .. optional_fields(r, fencing, attempt, fp),
                'PXAT', new_until + retention - 1)
              return {1, fencing, attempt, new_until, new_until - span}
            end
            local new_until = now + lease
            redis.call('SET', key, ARGV[1], 'PXAT', new_until + retention - 1)
            return {0, new_until, now}
            """
    )

    /// Completes one key or a batch of them: KEYS are the records, ARGV the retention in
    /// milliseconds and as a duration field (`<kept>`), then three per key: its owner header, its
    /// result field (` r<n>:<bytes>`, or empty), and the first claim's time (Unix ms in base 36, as
    /// the lease carries it; empty when it does not). Returns one answer per key, in order: 1
    /// completed, 0 lease lost, or that key's error (`DEDUPCORRUPT` for a value that cannot be read,
    /// `WRONGTYPE` for another kind of value at the key); a key's error does not stop the keys
    /// after it.
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
    /// claim's time comes with the call, already in base 36 (the lease knows it), rather than from
    /// the key's expiry, and a value in the current layout is cut at its spaces, not parsed: its
    /// optional fields after the broker time (fencing, attempt, fingerprint) are copied as they
    /// are. Per key, two numbers are formatted: how long after its first claim the record
    /// completed, and its broker time's wait before the first claim (when it has one). The value
    /// drops the owner header and the lease times and says when the record was first claimed, how
    /// long after it completed and how long it is kept (``RecordValue``); the record expires at
    /// the completion time plus the retention, and so does its key (`PXAT` its last millisecond,
    /// whatever the server's version dates a relative expiry by, and however long the call runs).
    /// A value in the earlier layout (``LegacyRecordValue``) is read field by field and completed
    /// in the current one.
    static let complete = RedisScript(
        name: "complete",
        source: """
            -- The rare cases, a value in the earlier layout and a lease that does not say when its
            -- record was first claimed, in functions of their own: their helpers are made only
            -- when they run. legacy_owned: where the fields after the holder's header start, or nil.
            local function legacy_owned(v, head)
            """ + ownerCheck + """
                  if is_legacy(v) then return owned_at(v, head) end
                  return nil
                end
                -- The broker time (ms), the fields after it as the completed value keeps them and the
                -- first claim's time (base 36), read field by field; nil when they cannot be read.
                local function read_fields(key, v, p, legacy, created)
                """ + inFlightFields + """
                      local r = in_flight_fields(v, p, legacy)
                      if not r then return nil end
                      if created == '' then
                        -- From the key's expiry.
                        local e = redis.call('PEXPIRETIME', key)
                        if e < 0 or e > 1e14 then return nil end
                        created = base36(math.max(0, e + 1 - r.retention - r.span))
                      end
                      return r.broker, optional_fields({}, r.fencing, r.attempt, r.fp), created
                    end
                    local kept, kept_text = tonumber(ARGV[1]), ARGV[2]
                    local t = redis.call('TIME')
                    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
                    local last = string.format('%d', now + kept - 1)
                    local answers = {}
                    for i = 1, #KEYS do
                      local key = KEYS[i]
                      local head, result, created = ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
                      local v = redis.pcall('GET', key)
                      local p, legacy
                      if type(v) == 'string' then
                        if string.sub(v, 1, #head) == head then p = #head + 1 else p = legacy_owned(v, head) legacy = true end
                      end
                      if type(v) == 'table' then
                        -- Another kind of value at the key (WRONGTYPE): this key's answer; the others go on.
                        answers[i] = v
                      elseif not p then
                        answers[i] = 0
                      else
                        -- The broker time (ms), and the fields after it as the completed value keeps them.
                        local broker, rest
                        if legacy or created == '' then
                          broker, rest, created = read_fields(key, v, p, legacy, created)
                        else
                          -- `<lease span> <retention>[ b<broker time>][…]`: cut at the spaces.
                          local s = string.find(v, ' ', p, true)
                          local q = s and string.find(v, ' ', s + 1, true)
                          if not q then
                            rest = s and ''
                          elseif string.byte(v, q + 1) == 98 then
                            local b, r = string.match(v, '^ b(%w+)()', q)
                            broker = b and tonumber(b, 36)
                            rest = broker and string.sub(v, r)
                          else
                            rest = string.sub(v, q)
                          end
                        end
                        if not rest then
                          answers[i] = redis.error_reply('DEDUPCORRUPT the value at ' .. key .. ' is not a dedup record')
                        else
                          local c = tonumber(created, 36)
                          local value = 'done ' .. created .. ' ' .. (now - c) .. ' ' .. kept_text
                          if broker then value = value .. ' b' .. (c - broker) end
                          redis.call('SET', key, value .. rest .. result, 'PXAT', last)
                          answers[i] = 1
                        end
                      end
                    end
                    return answers
                    """
    )

    /// ``complete`` for keys of several hash slots served by one Redis Cluster node (Redis 7's
    /// `allow-cross-slot-keys` flag): a cluster refuses declared keys of several slots before a
    /// script runs (`CROSSSLOT`), so none are declared, and ARGV is the key count, the keys, then
    /// ``complete``'s ARGV. A key the node does not serve (its slot moved or part-way through a
    /// migration) is refused when the script reads it, before anything is written for it: that
    /// key's answer is the error (`ERR Script attempted to access a non local key…`), and the store
    /// completes it again by its slot (see <doc:RedisCluster>). Not loaded with the others: a
    /// server without script flags (before 7.0) refuses it, and the store loads it on first use.
    static let completeAcrossSlots = RedisScript(
        name: "complete across slots",
        source: """
            #!lua flags=allow-cross-slot-keys
            local n = tonumber(ARGV[1])
            local KEYS, ARGV = {unpack(ARGV, 2, n + 1)}, {unpack(ARGV, n + 2)}

            """ + complete.source
    )

    /// ARGV: owner header. Returns 1 released (deleted), 0 lease lost.
    static let release = RedisScript(
        name: "release",
        source: prelude + ownerCheck + ownedValue + """
            redis.call('DEL', key)
            return 1
            """
    )

    /// ARGV: owner header, duration_ms. Returns {1, lease_until} renewed, 0 lease lost. The record
    /// keeps its retention after the lease and its first-claim time; one in the earlier layout is
    /// rewritten in the current one.
    static let renew = RedisScript(
        name: "renew",
        source: prelude + ownerCheck + inFlightFields + ownedValue + """
            local r = in_flight_fields(v, p, legacy)
            local e = redis.call('PEXPIRETIME', key)
            if not r or e < 0 or e > 1e14 then return corrupt() end
            local now = now_ms()
            if now > e then return 0 end
            local created = e + 1 - r.retention - r.span
            local new_until = now + tonumber(ARGV[2])
            redis.call('SET', key, head .. math.max(0, new_until - created) .. ' ' .. r.retention_text ..
              optional_fields(r, r.fencing, r.attempt, r.fp), 'PXAT', new_until + r.retention - 1)
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
    /// matches (by its broker time where it has one, else by its record time: the completion time
    /// when completed, else the first claim); returns 1 or 0.
    static let conditionalDelete = RedisScript(
        name: "delete",
        source: prelude + ownerCheck + inFlightFields + completedTimes + """
            local v = redis.call('GET', key)
            if not v then return 0 end
            local ours = string.sub(v, 1, 10) == 'in_flight ' or string.sub(v, 1, 10) == 'completed ' or string.sub(v, 1, 5) == 'done '
            if ARGV[1] == '' and ARGV[2] == '' and ARGV[3] == '' and ours then
              -- No filter (forget): a record of ours goes even if it cannot be read any more.
              redis.call('DEL', key)
              return 1
            end
            local state, time
            if string.sub(v, 1, 10) == 'in_flight ' then
              local p, legacy = fields_at(v)
              local r = p and in_flight_fields(v, p, legacy)
              local e = redis.call('PEXPIRETIME', key)
              if not r or e < 0 or e > 1e14 then return 0 end
              state = 'in_flight'
              time = r.broker or e + 1 - r.retention - r.span
            else
              local completed, _, broker = completion_of(v)
              state = 'completed'
              time = broker or completed
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
