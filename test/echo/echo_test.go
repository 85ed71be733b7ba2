package echo

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestAuth(t *testing.T) {
	h := Auth("session=good", Handler("pod", "svc"))
	for _, tc := range []struct {
		path, cookie string
		status       int
		header, want string
	}{
		{"/auth", "session=good", http.StatusAccepted, "X-Auth-Request-User", "good"},
		{"/auth", "session=bad", http.StatusUnauthorized, "WWW-Authenticate", `Cookie realm="echo"`},
		{"/auth", "", http.StatusUnauthorized, "WWW-Authenticate", `Cookie realm="echo"`},
		{"/other", "", http.StatusOK, "X-Backend", "pod"},
	} {
		r := httptest.NewRequest(http.MethodGet, tc.path, nil)
		if tc.cookie != "" {
			r.Header.Set("Cookie", tc.cookie)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.status || w.Header().Get(tc.header) != tc.want {
			t.Errorf("%s with cookie %q: %d %s: %q, want %d %q", tc.path, tc.cookie, w.Code, tc.header, w.Header().Get(tc.header), tc.status, tc.want)
		}
	}
}
