-- wrk script: POST one Criteo instance (39 fields, perf/wrk/predict.json) to the predict
-- endpoint. With PACE_MS set, each connection waits that long on average before each request (a
-- paced load); done() prints one JSON line of the run's figures.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = assert(io.open(os.getenv("PREDICT_BODY") or "perf/wrk/predict.json", "r"))
wrk.body = file:read("*l")
file:close()
local pace = tonumber(os.getenv("PACE_MS") or "0")
if pace > 0 then
  -- Uniform in [0, 2·pace] ms: the same mean, without every connection firing together.
  function delay()
    return math.random(0, 2 * pace)
  end
end
dofile(os.getenv("WRK_REPORT"))
