-- wrk script: POST one Criteo instance (39 fields) to the predict endpoint. With PACE_MS set,
-- each connection waits that long on average before each request (a paced load); done() prints one JSON
-- line of the run's figures.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"instances":[{"I1":1,"I2":5,"I3":0,"I4":1,"I5":382,"I6":4,"I7":15,"I8":2,"I9":181,"I10":1,"I11":2,"I12":"","I13":2,'
  .. '"C1":"68fd1e64","C2":"80e26c9b","C3":"fb936136","C4":"7b4723c4","C5":"25c83c98","C6":"7e0ccccf","C7":"de7995b8",'
  .. '"C8":"1f89b562","C9":"a73ee510","C10":"a8cd5504","C11":"b2cb9c98","C12":"37c9c164","C13":"2824a5f6","C14":"1adce6ef",'
  .. '"C15":"8ba8b39a","C16":"891b62e7","C17":"e5ba7672","C18":"f54016b9","C19":"21ddcdc9","C20":"b1252a9d",'
  .. '"C21":"07b5194c","C22":"","C23":"3a171ecb","C24":"c5c50484","C25":"e8b83407","C26":"9727dd16"}]}'
local pace = tonumber(os.getenv("PACE_MS") or "0")
if pace > 0 then
  -- Uniform in [0, 2·pace] ms: the same mean, without every connection firing together.
  function delay()
    return math.random(0, 2 * pace)
  end
end
dofile(os.getenv("WRK_REPORT"))
