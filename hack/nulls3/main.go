// nulls3 is an S3 endpoint that costs almost no CPU, for measuring how a copy tool's own CPU scales:
// its source bucket holds -objects objects of -size bytes (generated, all with the same content), and
// whatever is written to any other bucket is read, checked against its Content-MD5 and dropped.
// Listings of the source are generated; every other bucket lists empty. No request is authenticated.
// It listens on 127.0.0.1 only.
package main

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
)

var (
	objects = flag.Int("objects", 10000, "objects in the source bucket")
	size    = flag.Int("size", 10000, "bytes per object")
	bucket  = flag.String("bucket", "src", "the source bucket's name")
	port    = flag.Int("port", 0, "port on 127.0.0.1 (0: any free one, printed)")

	body     []byte
	etag     string
	gets     atomic.Int64
	puts     atomic.Int64
	modified = "2026-01-01T00:00:00.000Z"
)

func key(i int) string { return fmt.Sprintf("k%08d", i) }

func index(k string) int {
	if len(k) != 9 || k[0] != 'k' {
		return -1
	}
	i, err := strconv.Atoi(k[1:])
	if err != nil || i < 0 || i >= *objects {
		return -1
	}
	return i
}

func list(w http.ResponseWriter, r *http.Request, name string) {
	q := r.URL.Query()
	max := 1000
	if v, err := strconv.Atoi(q.Get("max-keys")); err == nil && v >= 0 && v < max {
		max = v
	}
	after := q.Get("start-after")
	if t := q.Get("continuation-token"); t != "" && t > after {
		after = t
	}
	prefix := q.Get("prefix")
	// Keys are k + 8 digits, so their byte order is their numeric order: the first key after `after`.
	start := sort.Search(*objects, func(i int) bool { return key(i) > after })
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">`)
	fmt.Fprintf(&b, "<Name>%s</Name><Prefix>%s</Prefix><MaxKeys>%d</MaxKeys>", name, prefix, max)
	if q.Get("encoding-type") == "url" {
		b.WriteString("<EncodingType>url</EncodingType>")
	}
	count, last := 0, ""
	if name == *bucket && (prefix == "" || strings.HasPrefix("k", prefix) || strings.HasPrefix(prefix, "k")) {
		for i := start; i < *objects && count < max; i++ {
			k := key(i)
			if !strings.HasPrefix(k, prefix) {
				continue
			}
			fmt.Fprintf(&b, "<Contents><Key>%s</Key><LastModified>%s</LastModified><ETag>&quot;%s&quot;</ETag><Size>%d</Size><StorageClass>STANDARD</StorageClass></Contents>", k, modified, etag, *size)
			count, last = count+1, k
		}
	}
	truncated := name == *bucket && count == max && last != key(*objects-1) && max > 0
	fmt.Fprintf(&b, "<KeyCount>%d</KeyCount><IsTruncated>%t</IsTruncated>", count, truncated)
	if truncated {
		fmt.Fprintf(&b, "<NextContinuationToken>%s</NextContinuationToken>", last)
	}
	b.WriteString("</ListBucketResult>")
	w.Header().Set("Content-Type", "application/xml")
	io.WriteString(w, b.String())
}

func handle(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/")
	name, k, _ := strings.Cut(path, "/")
	q := r.URL.Query()
	switch {
	case k == "" && r.Method == http.MethodHead:
		w.WriteHeader(http.StatusOK)
	case k == "" && q.Has("location"):
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></LocationConstraint>`)
	case k == "" && r.Method == http.MethodGet:
		list(w, r, name)
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		if name != *bucket || index(k) < 0 {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusNotFound)
			if r.Method == http.MethodGet {
				io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>`)
			}
			return
		}
		h := w.Header()
		h.Set("Content-Length", strconv.Itoa(len(body)))
		h.Set("ETag", `"`+etag+`"`)
		h.Set("Last-Modified", "Thu, 01 Jan 2026 00:00:00 GMT")
		h.Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			gets.Add(1)
			w.Write(body)
		}
	case r.Method == http.MethodPut:
		sum := md5.New()
		if _, err := io.Copy(sum, r.Body); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		got := sum.Sum(nil)
		if want := r.Header.Get("Content-MD5"); want != "" && want != base64.StdEncoding.EncodeToString(got) {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>BadDigest</Code><Message>Content-MD5 does not match</Message></Error>`)
			return
		}
		puts.Add(1)
		w.Header().Set("ETag", `"`+hex.EncodeToString(got)+`"`)
		w.WriteHeader(http.StatusOK)
	default:
		w.WriteHeader(http.StatusNotImplemented)
	}
}

func main() {
	flag.Parse()
	body = make([]byte, *size)
	for i := range body {
		body[i] = byte(i*7 + 13)
	}
	sum := md5.Sum(body)
	etag = hex.EncodeToString(sum[:])
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on http://%s\n", listener.Addr())
	http.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"gets": %d, "puts": %d}`, gets.Load(), puts.Load())
	})
	http.HandleFunc("/", handle)
	log.Fatal(http.Serve(listener, nil))
}
