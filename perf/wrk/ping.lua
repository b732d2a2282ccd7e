-- wrk script: GET /v1/ping, the server's bare speed; done() prints one JSON line.
dofile(os.getenv("WRK_REPORT"))
