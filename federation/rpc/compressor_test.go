package rpc

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc/encoding"
)

func TestZstdCompressorRoundTrip(t *testing.T) {
	c := encoding.GetCompressor(CompressorName)
	if c == nil {
		t.Fatal("zstd compressor not registered with gRPC")
	}
	msg := []byte(strings.Repeat("fedsim worker info ", 50000))
	for range 3 { // pooled encoders are reused
		var buf bytes.Buffer
		w, err := c.Compress(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(msg)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if buf.Len() >= len(msg)/10 {
			t.Fatalf("%d bytes compress to %d", len(msg), buf.Len())
		}
		r, err := c.Decompress(&buf)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("round trip: %v", err)
		}
	}
	r, err := c.Decompress(strings.NewReader("not zstd at all"))
	if err == nil {
		if _, err = io.ReadAll(r); err == nil {
			t.Fatal("garbage decompressed without error")
		}
	}
}
