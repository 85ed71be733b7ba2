//go:build !linux

package proxy

import "net"

// unread and unaccepted are not known here: settle goes by the backend's own state alone.
func unread(net.Conn) int { return 0 }

func unaccepted(net.Listener) int { return 0 }
