-- wrk script: POST a valid scraper configuration, 20 collections round-robin,
-- with the bearer token from the environment (BENCH_TOKEN).
local n = 0
local token = os.getenv("BENCH_TOKEN") or ""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
request = function()
  n = n + 1
  local body = string.format(
    '{"collection":"bench%d","ttl":60,"source":{"url":"http://127.0.0.1:9/p%d"},' ..
    '"scope":"div.item","fields":{"title":"h2","price":"span.price | number"},"key":["title"]}',
    n % 20, n)
  return wrk.format(nil, nil, nil, body)
end
