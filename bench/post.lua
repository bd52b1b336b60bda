-- wrk script for `tavus-callbacks bench`: POSTs a realistic mix of Tavus callbacks.
--
-- Bodies come from BENCH_BODIES, one JSON template a line (written by bench/payloads.py), with
-- two placeholders: @CID@ (the conversation id) and @SENT@ (when the request was due, epoch
-- seconds). Each thread walks the templates in order, one conversation's lifecycle after the
-- other, with a conversation id of its own per lifecycle, so every request carries a new
-- idempotency key and dedup never short-circuits the intake.
--
-- BENCH_RATE > 0 sends at a constant total rate, wrk2-style: each thread has one connection and
-- a schedule of due times, wrk's delay() waits for the next one, and a latency is counted from
-- the due time when the request went out late, so a stall is not hidden by the requests it held
-- back ("coordinated omission"). Plain wrk has no -R; this is its Lua delay() hook plus a real
-- clock through LuaJIT's FFI. BENCH_RATE = 0 sends as fast as the server answers.
--
-- done() writes one JSON object to BENCH_OUT: counts, statuses and, at a constant rate, every
-- latency in ms.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local CLOCK_REALTIME, CLOCK_MONOTONIC = 0, 1
local timespec = ffi.new("bench_timespec")

local function clock(id)
  ffi.C.clock_gettime(id, timespec)
  return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) * 1e-9
end

local rate = tonumber(os.getenv("BENCH_RATE") or "0")
local threads_count = tonumber(os.getenv("BENCH_THREADS") or "1")
local run_prefix = os.getenv("BENCH_PREFIX") or "bench"

-- Each template split into literal parts and placeholder names, read once per thread.
local templates = {}
for line in io.lines(os.getenv("BENCH_BODIES")) do
  local parts, position = {}, 1
  while true do
    local first, last, name = line:find("@(%u+)@", position)
    if not first then break end
    parts[#parts + 1] = line:sub(position, first - 1)
    parts[#parts + 1] = name
    position = last + 1
  end
  parts[#parts + 1] = line:sub(position)
  templates[#templates + 1] = parts
end

local threads = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  threads[#threads + 1] = thread
end

local sent, path, headers = 0, nil, nil
-- Globals, not locals: done() reads them from each thread with thread:get().
latencies, statuses = {}, {}
local due, started = nil, nil

function init(args)
  path = wrk.path
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  local index = sent % #templates + 1
  local conversation = string.format("%s-%d-%d", run_prefix, thread_id, math.floor(sent / #templates))
  sent = sent + 1
  local now = clock(CLOCK_MONOTONIC)
  -- Late (the server held us up): count from when it was due. Early (wrk's timers count whole
  -- milliseconds): from now.
  started = (due and due < now) and due or now
  -- The wall-clock time the request was due, for end-to-end latency in the store.
  local sent_at = string.format("%.6f", clock(CLOCK_REALTIME) - (now - started))
  local values = { CID = conversation, SENT = sent_at }
  local parts, body = templates[index], {}
  for i = 1, #parts do
    body[i] = (i % 2 == 0) and values[parts[i]] or parts[i]
  end
  return wrk.format("POST", path, headers, table.concat(body))
end

function response(status, headers, body)
  -- Only a constant-rate thread has one request in flight, so only there is `started` its own.
  if rate > 0 then
    latencies[#latencies + 1] = (clock(CLOCK_MONOTONIC) - started) * 1000
  end
  statuses[status] = (statuses[status] or 0) + 1
end

if rate > 0 then
  local interval = threads_count / rate -- seconds between two requests of this thread
  local next_due = nil

  function delay()
    local now = clock(CLOCK_MONOTONIC)
    -- Threads start spread over one interval, not all at once.
    next_due = next_due or (now + math.random() * interval)
    due = next_due
    next_due = next_due + interval
    local wait_ms = (due - now) * 1000
    -- wrk's timers count whole milliseconds and fire late rather than early: round down.
    return wait_ms > 1 and math.floor(wait_ms) or 0
  end
end

function done(summary, latency, requests)
  local all, counts = {}, {}
  for _, thread in ipairs(threads) do
    for _, value in ipairs(thread:get("latencies")) do
      all[#all + 1] = string.format("%.3f", value)
    end
    for status, count in pairs(thread:get("statuses")) do
      counts[#counts + 1] = string.format("[%d, %d]", status, count)
    end
  end
  local errors = summary.errors
  local out = assert(io.open(os.getenv("BENCH_OUT"), "w"))
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, "write": %d, '
      .. '"timeout": %d}, "statuses": [%s], "service_p50_us": %d, "service_p99_us": %d, '
      .. '"latency_ms": [%s]}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write,
    errors.timeout, table.concat(counts, ", "), latency:percentile(50), latency:percentile(99),
    table.concat(all, ",")
  ))
  out:close()
end
