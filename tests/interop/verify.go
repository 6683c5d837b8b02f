// An outside verifier for markex logs, built only on Go's golang.org/x/mod
// (sumdb/note for signed notes, sumdb/tlog for RFC 6962/9162 proofs).
// Input on stdin, one item per line:
//   vkey <verifier key string>
//   note <base64 of the whole signed checkpoint note>
//   leaf <index> <base64 envelope>
//   inclusion <index> <hex hash>,<hex hash>,...
//   consistency <old size> <base64 old root> <hex hash>,...
// Prints "ok" and exits 0 when every check passes.
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func hashes(s string) []tlog.Hash {
	var out []tlog.Hash
	if s == "" || s == "-" {
		return out
	}
	for _, h := range strings.Split(s, ",") {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != 32 {
			fail("bad hash %q", h)
		}
		var x tlog.Hash
		copy(x[:], b)
		out = append(out, x)
	}
	return out
}

func main() {
	var verifier note.Verifier
	var size int64
	var root tlog.Hash
	leaves := map[int64]tlog.Hash{}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "vkey":
			v, err := note.NewVerifier(f[1])
			if err != nil {
				fail("verifier key: %v", err)
			}
			verifier = v
		case "note":
			raw, _ := base64.StdEncoding.DecodeString(f[1])
			n, err := note.Open(raw, note.VerifierList(verifier))
			if err != nil {
				fail("note.Open: %v", err)
			}
			lines := strings.Split(n.Text, "\n")
			if lines[0] != verifier.Name() {
				fail("origin %q is not the key name %q", lines[0], verifier.Name())
			}
			size, _ = strconv.ParseInt(lines[1], 10, 64)
			b, err := base64.StdEncoding.DecodeString(lines[2])
			if err != nil || len(b) != 32 {
				fail("root hash")
			}
			copy(root[:], b)
		case "leaf":
			i, _ := strconv.ParseInt(f[1], 10, 64)
			env, _ := base64.StdEncoding.DecodeString(f[2])
			leaves[i] = tlog.RecordHash(env)
		case "inclusion":
			i, _ := strconv.ParseInt(f[1], 10, 64)
			if err := tlog.CheckRecord(hashes(f[2]), size, root, i, leaves[i]); err != nil {
				fail("inclusion of %d in %d: %v", i, size, err)
			}
		case "consistency":
			old, _ := strconv.ParseInt(f[1], 10, 64)
			b, _ := base64.StdEncoding.DecodeString(f[2])
			var oldRoot tlog.Hash
			copy(oldRoot[:], b)
			if err := tlog.CheckTree(hashes(f[3]), size, root, old, oldRoot); err != nil {
				fail("consistency %d -> %d: %v", old, size, err)
			}
		}
	}
	_ = sha256.New
	fmt.Println("ok")
}
