-- wrk script for bench/api_load.py: random patient reads, fuzzy searches and creations.
--
--   wrk -t1 -c50 -d20s -s bench/wrk_patients.lua http://127.0.0.1:8000 -- \
--       mode=get data=/tmp/bench token=... rate=0
--
-- mode: get | search | create | mixed (80% get, 15% search, 5% create)
-- data: a folder holding ids.txt (one patient id a line), queries.txt (one URL-encoded
--       query a line), given.txt and family.txt (names for the bodies of POST /patients)
-- rate: 0 = closed loop (every connection sends again as soon as it has its answer);
--       N > 0 = open loop: requests are scheduled as a Poisson process of N per second
--       (per wrk thread), whatever the answers do; a connection waits for its slot.
-- samples: 1 = print the first three non-2xx answers of each thread (parses every answer).
-- The summary is printed as one line, "BENCH_RESULT {json}", for api_load.py to read.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1000 + tonumber(timespec.tv_nsec) / 1e6
end

local function read_lines(path)
  local lines = {}
  local file = io.open(path, "r")
  if file == nil then
    return lines
  end
  for line in file:lines() do
    if #line > 0 then
      lines[#lines + 1] = line
    end
  end
  file:close()
  return lines
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

local mode, ids, queries, given, family, post_headers
local interval_ms = 0
local next_slot = nil
late = 0  -- global: read by done() through thread:get
sent = 0

function init(args)
  local options = {}
  for _, arg in ipairs(args) do
    local key, value = arg:match("^([%w_]+)=(.*)$")
    if key then
      options[key] = value
    end
  end
  mode = options.mode or "get"
  local data = options.data or "."
  ids = read_lines(data .. "/ids.txt")
  queries = read_lines(data .. "/queries.txt")
  given = read_lines(data .. "/given.txt")
  family = read_lines(data .. "/family.txt")
  local rate = tonumber(options.rate or "0")
  if rate > 0 then
    interval_ms = 1000 / rate
  else
    delay = nil
  end
  if options.token and #options.token > 0 then
    wrk.headers["Authorization"] = "Bearer " .. options.token
  end
  wrk.headers["Accept"] = "application/json"
  -- wrk.format() takes the headers given in place of wrk.headers, not beside them.
  post_headers = {}
  for name, value in pairs(wrk.headers) do
    post_headers[name] = value
  end
  post_headers["Content-Type"] = "application/json"
  if options.samples ~= "1" then
    response = nil  -- wrk parses headers and bodies for Lua only when response() exists
  end
  math.randomseed(tonumber(options.seed or "1") + os.time())
end

local SEXES = { "female", "male", "female", "male", "female", "male", "other", "unknown" }

local function get_request()
  return wrk.format("GET", "/patients/" .. ids[math.random(#ids)])
end

local function search_request()
  return wrk.format(
    "GET",
    "/patients?q=" .. queries[math.random(#queries)] .. "&sort=family_name,-birth_date"
  )
end

local function create_request()
  local body = string.format(
    '{"given_name":"%s","family_name":"%s","birth_date":"%04d-%02d-%02d","sex":"%s"}',
    given[math.random(#given)],
    family[math.random(#family)],
    math.random(1930, 2023),
    math.random(1, 12),
    math.random(1, 28),
    SEXES[math.random(#SEXES)]
  )
  return wrk.format("POST", "/patients", post_headers, body)
end

function request()
  sent = sent + 1
  if mode == "get" then
    return get_request()
  elseif mode == "search" then
    return search_request()
  elseif mode == "create" then
    return create_request()
  end
  local pick = math.random(100)
  if pick <= 80 then
    return get_request()
  elseif pick <= 95 then
    return search_request()
  end
  return create_request()
end

-- wrk calls delay() before every request when the script defines it; init() removes it in
-- the closed loop (wrk looks for it after init), so no timer is armed there.
function delay()
  local now = now_ms()
  if next_slot == nil then
    next_slot = now
  end
  -- Poisson arrivals: exponential gaps with the mean interval.
  next_slot = next_slot - interval_ms * math.log(1 - math.random())
  local wait = next_slot - now
  if wait < -1 then
    late = late + 1  -- every connection was busy: the open loop did not hold here
  end
  if wait < 0 then
    return 0
  end
  return math.floor(wait + 0.5)
end

-- The first few failures, for the report: "BENCH_SAMPLE <status> <body>".
local samples = 0

function response(status, headers, body)
  if (status < 200 or status > 299) and samples < 3 then
    samples = samples + 1
    io.write(string.format("BENCH_SAMPLE %d %s\n", status, (body or ""):sub(1, 300):gsub("\n", " ")))
  end
end

function done(summary, latency, requests)
  local late_total, sent_total = 0, 0
  for _, thread in ipairs(threads) do
    late_total = late_total + (thread:get("late") or 0)
    sent_total = sent_total + (thread:get("sent") or 0)
  end
  local errors = summary.errors
  io.write(
    string.format(
      "BENCH_RESULT {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,"
        .. "\"connect_errors\":%d,\"read_errors\":%d,\"write_errors\":%d,"
        .. "\"status_errors\":%d,\"timeouts\":%d,"
        .. "\"p50_us\":%d,\"p90_us\":%d,\"p95_us\":%d,\"p99_us\":%d,\"max_us\":%d,"
        .. "\"mean_us\":%.1f,\"late\":%d,\"sent\":%d}\n",
      summary.requests,
      summary.duration,
      summary.bytes,
      errors.connect,
      errors.read,
      errors.write,
      errors.status,
      errors.timeout,
      latency:percentile(50),
      latency:percentile(90),
      latency:percentile(95),
      latency:percentile(99),
      latency.max,
      latency.mean,
      late_total,
      sent_total
    )
  )
end
