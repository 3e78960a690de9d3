package archtest

import (
	"bufio"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/fedsim/fedsim/"

// diagram reads the package paths of ARCHITECTURE.md's first code block, top
// layer first: each line that does not start with a space opens an entry.
func diagram(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var pkgs []string
	fences := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() && fences < 2 {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "```"):
			fences++
		case fences == 1 && line != "" && line[0] != ' ':
			pkgs = append(pkgs, strings.Fields(line)[0])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(pkgs) == 0 {
		t.Fatalf("%s: no layer diagram (a ``` block of package lines) found", path)
	}
	return pkgs
}

// imports maps every package directory under root (relative, slash
// separated) to the fedsim packages its non-test files import.
func imports(t *testing.T, root string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "results" || name == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		pkg := filepath.ToSlash(rel)
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		if _, ok := out[pkg]; !ok {
			out[pkg] = nil
		}
		for _, spec := range f.Imports {
			p, err := strconv.Unquote(spec.Path.Value)
			if err != nil {
				return err
			}
			if strings.HasPrefix(p, module) {
				out[pkg] = append(out[pkg], strings.TrimPrefix(p, module))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLayerDiagram fails when a package is missing from ARCHITECTURE.md's
// diagram, when the diagram names a package that does not exist, or when a
// package imports one drawn above it.
func TestLayerDiagram(t *testing.T) {
	const root = "../.."
	layers := diagram(t, filepath.Join(root, "ARCHITECTURE.md"))
	deps := imports(t, root)
	pos := map[string]int{}
	for i, p := range layers {
		if _, dup := pos[p]; dup {
			t.Errorf("ARCHITECTURE.md lists %s twice", p)
		}
		pos[p] = i
		if _, ok := deps[p]; !ok && p != "configs" {
			t.Errorf("ARCHITECTURE.md lists %s, which is not a package of the module: remove or rename it", p)
		}
	}
	for pkg, imported := range deps {
		i, ok := pos[pkg]
		if !ok {
			t.Errorf("package %s is missing from ARCHITECTURE.md's layer diagram: add a line for it above every package it imports", pkg)
			continue
		}
		for _, q := range imported {
			if j, ok := pos[q]; ok && j <= i {
				t.Errorf("%s imports %s, which ARCHITECTURE.md draws above it: imports must point down (move a line or the dependency)", pkg, q)
			}
		}
	}
}
