// Command verify checks akashi's interoperability vectors with Go's reference implementations:
// golang.org/x/mod/sumdb/note verifies every signed checkpoint against the vkey, and
// golang.org/x/mod/sumdb/tlog checks every inclusion proof (CheckRecord) and consistency proof
// (CheckTree). If these pass, standard C2SP / sumdb tooling accepts akashi's output unchanged.
//
// Witness cosignatures (c2sp.org/tlog-cosignature, type 0x04) are checked by note.Open with a
// cosignature/v1 verifier written here from the spec over Go's crypto/ed25519: its own parsing
// of the vkey and the signature line, key id and signed message, independent of akashi's.
//
// Run (offline, with Debian's golang-go and golang-golang-x-mod-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run tools/interop/verify.go ledger/tests/vectors/akashi_vectors.json
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
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
	Witnesses   []string `json:"witness_vkeys"`
	Cosigned    []string `json:"cosigned_checkpoints"`
}

// cosigner verifies Ed25519 cosignature/v1 signatures (c2sp.org/tlog-cosignature).
type cosigner struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (c *cosigner) Name() string    { return c.name }
func (c *cosigner) KeyHash() uint32 { return c.hash }

// Verify checks sig = 8-byte big-endian timestamp || Ed25519 signature over
// "cosignature/v1\ntime <t>\n" || msg.
func (c *cosigner) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig[:8])
	if t > 1<<63-1 {
		return false
	}
	m := append([]byte(fmt.Sprintf("cosignature/v1\ntime %d\n", t)), msg...)
	return ed25519.Verify(c.key, m, sig[8:])
}

// newCosigner parses "<name>+<hex key id>+base64(0x04 || key)" and checks the key id.
func newCosigner(vkey string) *cosigner {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		fail("witness vkey %q", vkey)
	}
	data, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(data) != 33 || data[0] != 0x04 {
		fail("witness vkey %q: not type 0x04", vkey)
	}
	h := sha256.Sum256(append([]byte(parts[0]+"\n"), data...))
	id := binary.BigEndian.Uint32(h[:4])
	if fmt.Sprintf("%08x", id) != parts[1] {
		fail("witness vkey %q: key id should be %08x", vkey, id)
	}
	return &cosigner{name: parts[0], hash: id, key: ed25519.PublicKey(data[1:])}
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
	verifiers := []note.Verifier{verifier}
	for _, w := range v.Witnesses {
		verifiers = append(verifiers, newCosigner(w))
	}
	if len(v.Cosigned) == 0 || len(v.Witnesses) == 0 {
		fail("no cosigned checkpoints")
	}
	for _, text := range v.Cosigned {
		n, err := note.Open([]byte(text), note.VerifierList(verifiers...))
		if err != nil {
			fail("note.Open (cosigned): %v", err)
		}
		if len(n.Sigs) != 1+len(v.Witnesses) {
			fail("cosigned checkpoint: %d of %d signatures verified", len(n.Sigs), 1+len(v.Witnesses))
		}
		// A flipped bit in the last cosignature must be caught.
		bad := []byte(text)
		bad[len(bad)-4] ^= 1
		if _, err := note.Open(bad, note.VerifierList(verifiers...)); err == nil {
			fail("a corrupted cosignature verified")
		}
	}
	fmt.Printf("ok: %d checkpoints (sumdb/note), %d tree hashes, %d inclusion and %d consistency proofs (sumdb/tlog), %d cosigned checkpoints (%d witnesses, crypto/ed25519)\n",
		len(v.Checkpoints), len(roots), len(v.Inclusion), len(v.Consistency), len(v.Cosigned), len(v.Witnesses))
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
