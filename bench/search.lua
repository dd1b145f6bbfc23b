-- wrk script for bench/search.sh: POSTs GraphQL queries in turn and counts
-- answers that are not 200 or carry GraphQL errors (printed at the end as
-- `graphql_errors N`; the shell script fails the run unless N is 0).
-- QUERY_KIND=search cycles through song searches; QUERY_KIND=floor sends the
-- cheapest possible query, to measure the HTTP + TLS + GraphQL floor.
local kind = os.getenv("QUERY_KIND") or "search"
-- 2000 distinct searches of one or two words, each word one to three
-- syllables of the catalog's name table (as seed-catalog makes names), cut
-- to a random prefix of at least two letters, as a listener types.
local syllables = { "ka", "lo", "mi", "ra", "sen", "tor", "vel", "an", "bri", "co", "dun", "el",
  "fa", "gor", "hal", "is", "jun", "ke", "lum", "mor", "nu", "ost", "pe", "quin", "ri", "sa",
  "tem", "ul", "vor", "wen", "xa", "yo", "zel", "ber", "cal", "dra" }
math.randomseed(42)
local function word()
  local w = ""
  for _ = 1, math.random(1, 3) do
    w = w .. syllables[math.random(#syllables)]
  end
  return string.sub(w, 1, math.random(2, #w))
end
local bodies = {}
local seen = {}
-- QUERY_KIND=cjk: the pieces of CJK titles seed-catalog wrote (one to three
-- characters from inside titles), from the file QUERIES names.
if kind == "cjk" then
  for q in io.lines(os.getenv("QUERIES")) do
    bodies[#bodies + 1] = '{"query":"{ songs(first: 20, search: \\"' .. q ..
      '\\") { totalCount nodes { id title durationMs artist { name } album { title } streamUrl } } }"}'
  end
end
while #bodies < 2000 do
  local q = word()
  if math.random() < 0.4 then
    q = q .. " " .. word()
  end
  if not seen[q] then
    seen[q] = true
    if kind == "floor" then
      bodies[#bodies + 1] = '{"query":"{ __typename }"}'
    else
      bodies[#bodies + 1] = '{"query":"{ songs(first: 20, search: \\"' .. q ..
        '\\") { totalCount nodes { id title durationMs artist { name } album { title } streamUrl } } }"}'
    end
  end
end
local n = 0
errors = 0 -- global, so that done() can read it from each thread
local threads = {}
local headers = { ["Content-Type"] = "application/json" }

function setup(thread)
  table.insert(threads, thread)
end

function request()
  n = n + 1
  return wrk.format("POST", "/graphql", headers, bodies[(n % #bodies) + 1])
end

function response(status, hdrs, body)
  if status ~= 200 or string.find(body, '"errors"', 1, true) then
    errors = errors + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do
    total = total + t:get("errors")
  end
  io.write(string.format("graphql_errors %d\n", total))
end
