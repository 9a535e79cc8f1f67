// Peer for bench/config-discovery: the original 2016 design's
// config-discovery reduced to its data path, in Go with the official
// MongoDB driver: POST /configurations parses the JSON body, inserts it into
// a capped collection and answers at once (no validation, no
// materialisation wait, no endpoint configuration, no Consul);
// GET /configurations?limit=N and GET /configurations/{id} read back.
// Same FerretDB, same machine, same wrk scripts as our service.
package main

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/primitive"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

func main() {
	url, db, addr := os.Getenv("MONGO_URL"), os.Getenv("PEER_DB"), os.Getenv("PEER_ADDR")
	client, err := mongo.Connect(context.Background(), options.Client().ApplyURI(url))
	if err != nil {
		log.Fatal(err)
	}
	d := client.Database(db)
	_ = d.CreateCollection(context.Background(), "capped_configurations",
		options.CreateCollection().SetCapped(true).SetSizeInBytes(64<<20))
	coll := d.Collection("capped_configurations")

	http.HandleFunc("/configurations", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		switch r.Method {
		case http.MethodPost:
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			var doc bson.M
			if err == nil {
				err = json.Unmarshal(body, &doc)
			}
			if err != nil {
				http.Error(w, `{"error":"bad json"}`, 400)
				return
			}
			doc["_id"] = primitive.NewObjectID()
			doc["type"] = "scraper"
			doc["container"] = nil
			if _, err := coll.InsertOne(ctx, doc); err != nil {
				http.Error(w, `{"error":"store"}`, 503)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(201)
			_ = json.NewEncoder(w).Encode(doc)
		case http.MethodGet:
			limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
			if limit <= 0 {
				limit = 100
			}
			cur, err := coll.Find(ctx, bson.M{}, options.Find().SetLimit(int64(limit)))
			if err != nil {
				http.Error(w, `{"error":"store"}`, 503)
				return
			}
			var docs []bson.M
			if err := cur.All(ctx, &docs); err != nil {
				http.Error(w, `{"error":"store"}`, 503)
				return
			}
			n, _ := coll.CountDocuments(ctx, bson.M{})
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"configurations": docs, "total": n})
		default:
			w.WriteHeader(405)
		}
	})
	http.HandleFunc("/configurations/", func(w http.ResponseWriter, r *http.Request) {
		id, err := primitive.ObjectIDFromHex(strings.TrimPrefix(r.URL.Path, "/configurations/"))
		if err != nil {
			http.Error(w, `{"error":"bad id"}`, 400)
			return
		}
		var doc bson.M
		if err := coll.FindOne(r.Context(), bson.M{"_id": id}).Decode(&doc); err != nil {
			http.Error(w, `{"error":"not found"}`, 404)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	})
	log.Fatal(http.ListenAndServe(addr, nil))
}
