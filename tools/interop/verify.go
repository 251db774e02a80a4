// Command verify checks akashi's interoperability vectors with Go's reference implementations:
// golang.org/x/mod/sumdb/note verifies every signed checkpoint against the vkey, and
// golang.org/x/mod/sumdb/tlog checks every inclusion proof (CheckRecord) and consistency proof
// (CheckTree). If these pass, standard C2SP / sumdb tooling accepts akashi's output unchanged.
//
// Run (offline, with Debian's golang-go and golang-golang-x-mod-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run tools/interop/verify.go ledger/tests/vectors/akashi_vectors.json
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type proof struct {
	LeafIndex int64    `json:"leaf_index"`
	OldSize   int64    `json:"old_size"`
	NewSize   int64    `json:"new_size"`
	TreeSize  int64    `json:"tree_size"`
	Path      []string `json:"path"`
}

type vectors struct {
	Vkey        string   `json:"vkey"`
	Checkpoints []string `json:"checkpoints"`
	Leaves      []string `json:"leaves_base64"`
	Inclusion   []proof  `json:"inclusion_proofs"`
	Consistency []proof  `json:"consistency_proofs"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func hashes(path []string) tlog.TreeProof {
	var out tlog.TreeProof
	for _, p := range path {
		b, err := base64.StdEncoding.DecodeString(p)
		if err != nil || len(b) != tlog.HashSize {
			fail("bad hash %q", p)
		}
		var h tlog.Hash
		copy(h[:], b)
		out = append(out, h)
	}
	return out
}

func main() {
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail("%v", err)
	}
	var v vectors
	if err := json.Unmarshal(raw, &v); err != nil {
		fail("%v", err)
	}
	verifier, err := note.NewVerifier(v.Vkey)
	if err != nil {
		fail("vkey: %v", err)
	}
	roots := map[int64]tlog.Hash{}
	for _, text := range v.Checkpoints {
		n, err := note.Open([]byte(text), note.VerifierList(verifier))
		if err != nil {
			fail("note.Open: %v", err)
		}
		lines := strings.Split(n.Text, "\n")
		size, err := strconv.ParseInt(lines[1], 10, 64)
		if err != nil {
			fail("size: %v", err)
		}
		root, err := base64.StdEncoding.DecodeString(lines[2])
		if err != nil {
			fail("root: %v", err)
		}
		var h tlog.Hash
		copy(h[:], root)
		roots[size] = h
	}
	var leafHashes []tlog.Hash
	var records [][]byte
	for _, l := range v.Leaves {
		b, _ := base64.StdEncoding.DecodeString(l)
		records = append(records, b)
		leafHashes = append(leafHashes, tlog.RecordHash(b))
	}
	stored, err := storeAll(records)
	if err != nil {
		fail("StoredHashes: %v", err)
	}
	// Recompute every root from the leaves with tlog's own tree code, too.
	for size, root := range roots {
		got, err := tlog.TreeHash(size, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(idx))
			for j, k := range idx {
				out[j] = stored[k]
			}
			return out, nil
		}))
		if err != nil || !bytes.Equal(got[:], root[:]) {
			fail("tree hash at %d: %v", size, err)
		}
	}
	for _, p := range v.Inclusion {
		root := roots[p.TreeSize]
		rp := tlog.RecordProof(hashes(p.Path))
		if err := tlog.CheckRecord(rp, p.TreeSize, root, p.LeafIndex, leafHashes[p.LeafIndex]); err != nil {
			fail("CheckRecord(%d in %d): %v", p.LeafIndex, p.TreeSize, err)
		}
	}
	for _, p := range v.Consistency {
		if err := tlog.CheckTree(hashes(p.Path), p.NewSize, roots[p.NewSize], p.OldSize, roots[p.OldSize]); err != nil {
			fail("CheckTree(%d -> %d): %v", p.OldSize, p.NewSize, err)
		}
	}
	fmt.Printf("ok: %d checkpoints (sumdb/note), %d tree hashes, %d inclusion and %d consistency proofs (sumdb/tlog)\n",
		len(v.Checkpoints), len(roots), len(v.Inclusion), len(v.Consistency))
}

// storeAll computes every stored hash of the tree over records, with tlog's own code.
func storeAll(records [][]byte) ([]tlog.Hash, error) {
	var stored []tlog.Hash
	reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for j, k := range idx {
			out[j] = stored[k]
		}
		return out, nil
	})
	for i, data := range records {
		hs, err := tlog.StoredHashes(int64(i), data, reader)
		if err != nil {
			return nil, err
		}
		stored = append(stored, hs...)
	}
	return stored, nil
}
