// Package access decides who may use a route, as ingress-nginx's access-control annotations
// configure nginx: basic authentication against an htpasswd Secret (auth-type: basic,
// auth-secret, auth-secret-type) and per client address request-rate and connection limits
// (limit-rps, limit-rpm, limit-burst-multiplier, limit-connections).
//
// It knows nothing of Kubernetes or of HTTP serving: the route compiler parses a Secret's
// bytes into Users and builds one zone per limit; the proxy asks them per request. Everything
// here is safe for concurrent use from many goroutines and event loops, and the per-request
// calls (Users.Verify on a remembered success, RateZone.Allow, ConnZone.Acquire and Release)
// do not allocate.
package access
