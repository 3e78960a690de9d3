package membership

import (
	"fmt"
	"testing"
)

// TestLineFilter checks that memberlist's warnings and errors are
// forwarded line by line, its debug lines dropped, and nothing at all after
// stop: memberlist's timers can log once after Shutdown, and a test's
// log function must not be called after the test ends.
func TestLineFilter(t *testing.T) {
	var got []string
	f := newLineFilter(func(format string, args ...any) { got = append(got, fmt.Sprintf(format, args...)) })
	f.Write([]byte("2026/11/28 [DEBUG] memberlist: ping\n2026/11/28 [ERR] memberlist: fail"))
	f.Write([]byte("ed\n[WARN] slow\n"))
	if len(got) != 2 || got[0] != "2026/11/28 [ERR] memberlist: failed" || got[1] != "[WARN] slow" {
		t.Fatalf("forwarded %q, want the [ERR] line (joined across writes) and the [WARN] line", got)
	}
	f.stop()
	if n, err := f.Write([]byte("[ERR] use of closed network connection\n")); n != 39 || err != nil || len(got) != 2 {
		t.Errorf("after stop: Write = %d, %v and %d lines forwarded, want 39, nil and still 2", n, err, len(got))
	}
	var nilFilter *lineFilter
	nilFilter.stop() // a node without a log function has a nil filter
	if newLineFilter(nil) != nil {
		t.Error("newLineFilter(nil) is not nil")
	}
}
