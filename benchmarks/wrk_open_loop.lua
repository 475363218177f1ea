-- Open-loop, constant-rate diagnosis requests for wrk (LuaJIT), corrected for coordinated omission.
--
-- wrk itself is closed-loop: a connection sends its next request when the previous answer
-- arrives, so a slow answer delays the requests behind it and their waiting is never measured
-- ("coordinated omission"). Here every connection (one per wrk thread: run wrk with -t N -c N)
-- follows a fixed schedule: request k of connection i is due at t0 + (i + k * N) / RATE.
-- delay() waits until the next due time; a request sent late (because the previous answer
-- came back late, or wrk was not scheduled) is measured from its due time (what a user arriving
-- then would have waited), one sent early (delay() rounds down to whole milliseconds) from when
-- it left. That is wrk2's correction, done in the script.
--
-- Configured by environment variables (wrk passes no options to the main Lua state):
--   WRK_RATE       total requests per second over all connections (0: closed loop, no pacing)
--   WRK_CONNECTIONS  the -c given to wrk (the per-connection interval is CONNECTIONS / RATE)
--   WRK_IDS        comma-separated equipment ids to cycle through
--   WRK_OUT        file that done() writes: one "lat_us" per line after a header line
--   WRK_WARMUP_S   seconds at the start whose answers are not recorded (default 0)
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } mlops_timespec;
int clock_gettime(int clk_id, mlops_timespec *tp);
]]
local ts = ffi.new("mlops_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

local rate = tonumber(os.getenv("WRK_RATE") or "0")
local warmup_us = tonumber(os.getenv("WRK_WARMUP_S") or "0") * 1e6
local out_path = os.getenv("WRK_OUT")

-- main state: number the threads so each paces its own phase of the schedule
local threads = {}
local counter = 0
function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

-- thread state
local requests = {}
local n_requests = 0
local next_request = 1
local interval_us, due_us, started_us, sent_us, prev_done_us
-- globals, not locals: done() reads them with thread:get()
lat = {}
statuses = {}
late = 0

function init(args)
  local ids = {}
  for id in string.gmatch(os.getenv("WRK_IDS") or "PMP-001", "[^,]+") do
    table.insert(ids, id)
  end
  local headers = { ["Content-Type"] = "application/json" }
  -- 997 distinct bodies: equipment ids and user ids cycle with co-prime periods
  for k = 0, 996 do
    local body = string.format('{"equipment_id":"%s","user_id":"user-%05d"}', ids[(k % #ids) + 1], (k * 7919) % 10000)
    table.insert(requests, wrk.format("POST", "/diagnosis/create", headers, body))
  end
  n_requests = #requests
  if rate > 0 then
    interval_us = tonumber(os.getenv("WRK_CONNECTIONS") or "1") * 1e6 / rate
  end
end

local function start(now)
  if started_us == nil then
    started_us = now
    if interval_us then
      -- stagger the connections: connection i starts i / RATE seconds after the first
      due_us = now + index * 1e6 / rate
    end
  end
end

function delay()
  local now = now_us()
  start(now)
  if not interval_us then
    return 0
  end
  local wait = due_us - now
  if wait <= 0 then
    return 0
  end
  return math.floor(wait / 1000)
end

function request()
  local now = now_us()
  start(now)
  sent_us = now
  if interval_us then
    -- Sent late (the previous answer held the connection, or wrk was not scheduled): count from
    -- the due time. Sent early (delay() rounds down to whole ms): count from when it left.
    if now > due_us then
      sent_us = due_us
      if now - due_us > 1000 then
        late = late + 1
      end
    end
    due_us = due_us + interval_us
  end
  local r = requests[next_request]
  next_request = next_request % n_requests + 1
  return r
end

function response(status, headers, body)
  local now = now_us()
  prev_done_us = now
  if now - started_us >= warmup_us then
    lat[#lat + 1] = now - sent_us
    statuses[status] = (statuses[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  if out_path == nil then
    return
  end
  local f = assert(io.open(out_path, "w"))
  local late_total, status_parts, total = 0, {}, {}
  for _, thread in ipairs(threads) do
    late_total = late_total + (thread:get("late") or 0)
    for code, n in pairs(thread:get("statuses") or {}) do
      total[code] = (total[code] or 0) + n
    end
  end
  for code, n in pairs(total) do
    table.insert(status_parts, string.format("%d:%d", code, n))
  end
  f:write(string.format("# late=%d statuses=%s errors_connect=%d errors_read=%d errors_write=%d errors_timeout=%d duration_us=%d\n",
    late_total, table.concat(status_parts, ","), summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, summary.duration))
  for _, thread in ipairs(threads) do
    for _, v in ipairs(thread:get("lat") or {}) do
      f:write(string.format("%.1f\n", v))
    end
  end
  f:close()
end
