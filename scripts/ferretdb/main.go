// Command ferretdb runs FerretDB v1 with its embedded SQLite backend, for
// scrapr's test bed and the stack's MongoDB-protocol image.
//
// Usage: ferretdb -listen 127.0.0.1:27017 -dir /path/to/data [-debug-addr 127.0.0.1:6060]
//
// _id index repair: FerretDB v1.24.2 pushes an `{_id: <string>}` filter down
// to SQLite as `WHERE _ferretdb_sjson->'$._id' = ?`, but the unique index it
// creates for _id is on `_ferretdb_sjson->"_id"`. SQLite matches index
// expressions syntactically, so every _id lookup, update and delete scans the
// whole table (EXPLAIN QUERY PLAN: "SCAN", not "SEARCH ... USING INDEX").
// This wrapper adds, for every table listed in a database's
// _ferretdb_collections, a plain (non-unique) index on exactly the pushed-down
// expression, so those statements become index searches. The index is
// invisible to MongoDB clients (FerretDB lists indexes from its own metadata),
// is dropped with its table, and is re-created within -index-every of a
// collection appearing. FerretDB's own unique index still enforces uniqueness.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log"
	"net/http"
	_ "net/http/pprof" // served only with -debug-addr
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	_ "modernc.org/sqlite" // the driver FerretDB uses
)

// idIndexSuffix names our index "<table>_id_path" (FerretDB's own is "<table>__id_").
const idIndexSuffix = "_id_path"

// indexer keeps one connection per database file and adds missing _id path indexes.
type indexer struct {
	dir string
	dbs map[string]*sql.DB
}

func (ix *indexer) open(file string) (*sql.DB, error) {
	if db := ix.dbs[file]; db != nil {
		return db, nil
	}
	// Same busy timeout as FerretDB's default; the file is already in WAL mode.
	u := "file:" + (&url.URL{Path: file}).EscapedPath() + "?_pragma=busy_timeout(10000)"
	db, err := sql.Open("sqlite", u)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	ix.dbs[file] = db
	return db, nil
}

func (ix *indexer) file(ctx context.Context, file string) error {
	db, err := ix.open(file)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	rows, err := db.QueryContext(ctx, "SELECT name FROM sqlite_master WHERE type = 'index'")
	if err != nil {
		return err
	}
	for rows.Next() {
		var name string
		if err = rows.Scan(&name); err != nil {
			_ = rows.Close()
			return err
		}
		have[name] = true
	}
	_ = rows.Close()
	if !have["sqlite_autoindex__ferretdb_collections_1"] {
		return nil // FerretDB has not initialised this file yet
	}
	var tables []string
	rows, err = db.QueryContext(ctx, "SELECT table_name FROM _ferretdb_collections")
	if err != nil {
		return err
	}
	for rows.Next() {
		var t string
		if err = rows.Scan(&t); err != nil {
			_ = rows.Close()
			return err
		}
		tables = append(tables, t)
	}
	_ = rows.Close()
	for _, t := range tables {
		name := t + idIndexSuffix
		if have[name] {
			continue
		}
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (_ferretdb_sjson->'$._id')`, name, t)
		if _, err = db.ExecContext(ctx, q); err != nil {
			// The table may have been dropped since we listed it: retry next round.
			if !strings.Contains(err.Error(), "no such table") {
				log.Printf("ferretdb wrapper: %s: %s: %v", filepath.Base(file), name, err)
			}
			continue
		}
		log.Printf("ferretdb wrapper: %s: added index %s", filepath.Base(file), name)
	}
	return nil
}

func (ix *indexer) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		files, _ := filepath.Glob(filepath.Join(ix.dir, "*.sqlite"))
		for _, f := range files {
			if err := ix.file(ctx, f); err != nil && ctx.Err() == nil {
				// A database dropped under us: forget its connection.
				if db := ix.dbs[f]; db != nil {
					_ = db.Close()
					delete(ix.dbs, f)
				}
			}
		}
		select {
		case <-ctx.Done():
			for _, db := range ix.dbs {
				_ = db.Close()
			}
			return
		case <-t.C:
		}
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on")
	dir := flag.String("dir", ".", "SQLite data directory")
	debugAddr := flag.String("debug-addr", "", "serve Go pprof on this address (off when empty)")
	indexEvery := flag.Duration("index-every", 250*time.Millisecond,
		"how often to add missing _id path indexes (0 disables)")
	flag.Parse()
	if *debugAddr != "" {
		go func() { log.Print(http.ListenAndServe(*debugAddr, nil)) }()
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		log.Fatal(err)
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		log.Fatal(err)
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/",
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *indexEvery > 0 {
		ix := &indexer{dir: abs, dbs: map[string]*sql.DB{}}
		go ix.run(ctx, *indexEvery)
	}
	log.Printf("ferretdb listening on %s", *listen)
	f.Run(ctx)
}
