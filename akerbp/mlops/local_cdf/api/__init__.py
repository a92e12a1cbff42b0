"""The CDF API resources, one module each: a module declares its routes on a `Router` (most of them through
`http.resources.Kind`) and its checks, and reaches the store and the function runtime only through the `Ctx` a
handler is given. A new resource (workflows, RAW) is one more module here and one line in server.ROUTERS."""
