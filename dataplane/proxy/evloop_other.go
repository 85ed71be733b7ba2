//go:build !linux

package proxy

import (
	"crypto/tls"
	"net"
)

// loops are Linux only; elsewhere the goroutine fast path serves every listener.
type loops struct{}

func (s *h1Server) serveLoops(net.Listener, int) (bool, error) { return false, nil }

func (*loops) stop() {}
func (*loops) kill() {}

// loopConn is the transport under a TLS connection; loops are Linux only, so it never moves.
type loopConn struct{ net.Conn }

func (s *h1Server) loopTransport(conn net.Conn) (net.Conn, *loopConn) { return conn, nil }

func (c *h1Conn) toLoop(net.Conn, *tls.Conn, *loopConn) bool { return false }

func (l *loopConn) writePending() error { return nil }
