// Reads a markex node's log as C2SP tlog-tiles over HTTPS with nothing but
// Go's golang.org/x/mod/sumdb (note for the checkpoint, tlog for the tiles and
// proofs) and the standard library.
//
//	go run tiles.go -url https://127.0.0.1:PORT -vkey VKEY -ca ca.pem \
//	    [-cert tls.pem -key tls.key] [-old old-checkpoint-file] [-records 0,5,299]
//
// It fetches <url>/checkpoint, verifies it with the verifier key, reads hashes
// through tlog.TileHashReader (Go's sumdb tile paths carry the height,
// tile/8/L/N; C2SP's do not, tile/L/N: the reader maps one to the other),
// checks the tree hash against the checkpoint root, proves and checks the
// inclusion of each -records index (tlog.ProveRecord / CheckRecord), proves
// and checks consistency with the -old checkpoint (ProveTree / CheckTree), and,
// with a client certificate, hashes every entry of every entry bundle to the
// leaf hash the tiles hold. Prints one "ok ..." line and exits 0 when every
// check passes; otherwise the failure on stderr and exit 1.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const height = 8

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

type fetcher struct {
	base   string
	client *http.Client
	got    int
}

func (f *fetcher) get(path string) ([]byte, int) {
	resp, err := f.client.Get(f.base + "/" + path)
	if err != nil {
		fail("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<24))
	if err != nil {
		fail("GET %s: reading the body: %v", path, err)
	}
	f.got++
	return body, resp.StatusCode
}

// c2spPath maps Go's sumdb tile path (tile/H/L/N, tile/H/data/N) to C2SP's
// (tile/L/N, tile/entries/N).
func c2spPath(t tlog.Tile) string {
	p := strings.TrimPrefix(t.Path(), fmt.Sprintf("tile/%d/", height))
	if strings.HasPrefix(p, "data/") {
		return "tile/entries/" + strings.TrimPrefix(p, "data/")
	}
	return "tile/" + p
}

// tileReader is tlog.TileReader over the node's HTTPS tiles.
type tileReader struct{ f *fetcher }

func (r tileReader) Height() int { return height }

func (r tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		body, code := r.f.get(c2spPath(t))
		if code != http.StatusOK {
			return nil, fmt.Errorf("%s: HTTP %d: %s", c2spPath(t), code, strings.TrimSpace(string(body)))
		}
		out[i] = body
	}
	return out, nil
}

func (r tileReader) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

// checkpoint verifies a checkpoint note and returns its tree.
func checkpoint(raw []byte, v note.Verifier) tlog.Tree {
	n, err := note.Open(raw, note.VerifierList(v))
	if err != nil {
		fail("note.Open: %v", err)
	}
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 || lines[0] != v.Name() {
		fail("checkpoint origin %q is not the key name %q", lines[0], v.Name())
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("checkpoint size %q: %v", lines[1], err)
	}
	h, err := tlog.ParseHash(lines[2])
	if err != nil {
		fail("checkpoint root %q: %v", lines[2], err)
	}
	return tlog.Tree{N: size, Hash: h}
}

func main() {
	url := flag.String("url", "", "the tiles prefix, https://HOST:PORT")
	vkey := flag.String("vkey", "", "the log's note verifier key")
	caFile := flag.String("ca", "", "the consortium CA certificate (PEM)")
	certFile := flag.String("cert", "", "a member or auditor certificate, for entry bundles")
	keyFile := flag.String("key", "", "its key")
	oldFile := flag.String("old", "", "an earlier checkpoint note of the same log")
	records := flag.String("records", "", "comma-separated leaf indexes to prove")
	flag.Parse()

	ca, err := os.ReadFile(*caFile)
	if err != nil {
		fail("%v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		fail("no certificate in %s", *caFile)
	}
	conf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if *certFile != "" {
		pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fail("client certificate: %v", err)
		}
		conf.Certificates = []tls.Certificate{pair}
	}
	f := &fetcher{
		base:   strings.TrimSuffix(*url, "/"),
		client: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: conf}},
	}
	v, err := note.NewVerifier(*vkey)
	if err != nil {
		fail("verifier key: %v", err)
	}

	raw, code := f.get("checkpoint")
	if code != http.StatusOK {
		fail("checkpoint: HTTP %d", code)
	}
	tree := checkpoint(raw, v)
	reader := tlog.TileHashReader(tree, tileReader{f})

	th, err := tlog.TreeHash(tree.N, reader)
	if err != nil {
		fail("TreeHash(%d): %v", tree.N, err)
	}
	if th != tree.Hash {
		fail("tree hash %v is not the checkpoint root %v", th, tree.Hash)
	}

	proved := 0
	for _, s := range strings.Split(*records, ",") {
		if s == "" {
			continue
		}
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fail("record index %q", s)
		}
		leaf, err := reader.ReadHashes([]int64{tlog.StoredHashIndex(0, i)})
		if err != nil {
			fail("leaf hash %d: %v", i, err)
		}
		p, err := tlog.ProveRecord(tree.N, i, reader)
		if err != nil {
			fail("ProveRecord(%d, %d): %v", tree.N, i, err)
		}
		if err := tlog.CheckRecord(p, tree.N, tree.Hash, i, leaf[0]); err != nil {
			fail("CheckRecord(%d in %d): %v", i, tree.N, err)
		}
		proved++
	}

	consistent := int64(-1)
	if *oldFile != "" {
		oldRaw, err := os.ReadFile(*oldFile)
		if err != nil {
			fail("%v", err)
		}
		old := checkpoint(oldRaw, v)
		p, err := tlog.ProveTree(tree.N, old.N, reader)
		if err != nil {
			fail("ProveTree(%d, %d): %v", tree.N, old.N, err)
		}
		if err := tlog.CheckTree(p, tree.N, tree.Hash, old.N, old.Hash); err != nil {
			fail("CheckTree(%d -> %d): %v", old.N, tree.N, err)
		}
		consistent = old.N
	}

	entries := 0
	if *certFile != "" {
		for n := int64(0); n*(1<<height) < tree.N; n++ {
			w := tree.N - n*(1<<height)
			if w > 1<<height {
				w = 1 << height
			}
			t := tlog.Tile{H: height, L: -1, N: n, W: int(w)}
			body, code := f.get(c2spPath(t))
			if code != http.StatusOK {
				fail("%s: HTTP %d: %s", c2spPath(t), code, strings.TrimSpace(string(body)))
			}
			// The bundle's leaf hashes in one read: TileHashReader keeps no tiles,
			// so each read fetches (and authenticates) its tiles again.
			indexes := make([]int64, w)
			for k := range indexes {
				indexes[k] = tlog.StoredHashIndex(0, n*(1<<height)+int64(k))
			}
			leaves, err := reader.ReadHashes(indexes)
			if err != nil {
				fail("leaf hashes of %s: %v", c2spPath(t), err)
			}
			for k := int64(0); k < w; k++ {
				if len(body) < 2 {
					fail("%s: truncated at entry %d", c2spPath(t), k)
				}
				l := int(body[0])<<8 | int(body[1])
				if len(body) < 2+l {
					fail("%s: entry %d is truncated", c2spPath(t), k)
				}
				entry := body[2 : 2+l]
				body = body[2+l:]
				i := n*(1<<height) + k
				if tlog.RecordHash(entry) != leaves[k] {
					fail("entry %d does not hash to leaf %d of the tiles", i, i)
				}
				entries++
			}
			if len(body) != 0 {
				fail("%s: %d bytes after its %d entries", c2spPath(t), len(body), w)
			}
		}
	}
	fmt.Printf("ok size=%d proved=%d consistent_from=%d entries=%d fetches=%d\n",
		tree.N, proved, consistent, entries, f.got)
}
