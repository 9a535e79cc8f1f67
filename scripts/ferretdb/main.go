// Command ferretdb runs FerretDB v1 with its embedded SQLite backend, for
// scrapr's test bed and the stack's MongoDB-protocol image.
//
// Usage: ferretdb -listen 127.0.0.1:27017 -dir /path/to/data [-debug-addr 127.0.0.1:6060]
//
// _id index repair: FerretDB v1.24.2 pushes an `{_id: <string>}` filter down
// to SQLite as `WHERE _ferretdb_sjson->'$._id' = ?` (find, update, delete,
// findAndModify; deletes by _id list use `IN`), but the unique index it creates
// for _id, "<table>__id_", is on `_ferretdb_sjson->"_id"`. SQLite matches
// index expressions syntactically, so every one of those statements scans the
// whole table (EXPLAIN QUERY PLAN: "SCAN", not "SEARCH ... USING INDEX").
// This wrapper replaces, in one transaction, each "<table>__id_" index of
// every database file with a unique index of the same name on exactly the
// pushed-down expression (the same value: the top-level _id). Uniqueness,
// FerretDB's metadata and index names stay as they were; the statements
// become index searches. New collections are repaired within -index-every.
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

// pushedDown is the expression FerretDB compares _id with (metadata.IDColumn).
const pushedDown = "_ferretdb_sjson->'$._id'"

// indexer keeps one connection per database file and repairs _id indexes.
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

// file repairs the _id indexes of one database file that still need it.
func (ix *indexer) file(ctx context.Context, file string) error {
	db, err := ix.open(file)
	if err != nil {
		return err
	}
	type index struct{ name, table string }
	var todo []index
	// FerretDB names the _id index "<table>__id_"; sql is NULL for automatic indexes.
	rows, err := db.QueryContext(ctx, `SELECT name, tbl_name, sql FROM sqlite_master
		WHERE type = 'index' AND name = tbl_name || '__id_'`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var name, table string
		var def sql.NullString
		if err = rows.Scan(&name, &table, &def); err != nil {
			_ = rows.Close()
			return err
		}
		if def.Valid && !strings.Contains(def.String, pushedDown) {
			todo = append(todo, index{name, table})
		}
	}
	_ = rows.Close()
	if err = rows.Err(); err != nil {
		return err
	}
	for _, x := range todo {
		err = repair(ctx, db, x.name, x.table)
		if err != nil {
			// The table may have been dropped since we listed it: retry next round.
			if !strings.Contains(err.Error(), "no such") {
				log.Printf("ferretdb wrapper: %s: %s: %v", filepath.Base(file), x.name, err)
			}
			continue
		}
		log.Printf("ferretdb wrapper: %s: %s now indexes %s", filepath.Base(file), x.name, pushedDown)
	}
	return nil
}

// repair swaps one index in a single transaction, so there is no moment
// without a unique _id index.
func repair(ctx context.Context, db *sql.DB, name, table string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err = tx.ExecContext(ctx, fmt.Sprintf(`DROP INDEX %q`, name)); err != nil {
		return err
	}
	if _, err = tx.ExecContext(ctx, fmt.Sprintf(`CREATE UNIQUE INDEX %q ON %q (%s)`, name, table, pushedDown)); err != nil {
		return err
	}
	return tx.Commit()
}

func (ix *indexer) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		files, _ := filepath.Glob(filepath.Join(ix.dir, "*.sqlite"))
		for _, f := range files {
			// Never a cancellable context for SQL: see the modernc.org/sqlite
			// interrupt leak in docs/datasource.md.
			if err := ix.file(context.Background(), f); err != nil && ctx.Err() == nil {
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
		"how often to repair new _id indexes (0 disables)")
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
