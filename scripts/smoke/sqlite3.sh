#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Workload: the sqlite3 CLI. Tables filled with tens of thousands of rows in
# transactions (literal INSERTs, parsed one by one, and INSERT ... SELECT from
# a recursive CTE), indexes, joins, GROUP BY, window functions, a recursive
# CTE, a small page cache so that sorts spill, VACUUM and integrity_check.
# shellcheck source=lib.sh
. "$SMOKE_DIR/lib.sh"

{
    cat <<'SQL'
PRAGMA journal_mode = DELETE;
PRAGMA cache_size = 200;
CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, score REAL);
CREATE TABLE item (id INTEGER PRIMARY KEY, title TEXT, price INTEGER, tags TEXT);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, item_id INTEGER, qty INTEGER, note TEXT);
BEGIN;
SQL
    # 12000 literal INSERTs, in transactions of 3000.
    for ((i = 1; i <= 12000; i++)); do
        printf "INSERT INTO customer VALUES (%d, 'customer-%d-%s', 'city%d', %d.%02d);\n" \
            "$i" "$i" "$(((i * 7919) % 100003))" $((i % 37)) $(((i * 31) % 1000)) $((i % 100))
        if ((i % 3000 == 0)); then printf 'COMMIT;\nBEGIN;\n'; fi
    done
    cat <<'SQL'
COMMIT;
BEGIN;
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 5000)
INSERT INTO item SELECT x, 'item ' || x || ' ' || substr('abcdefghijklmnopqrstuvwxyz', 1 + x % 26, 1 + x % 17),
    (x * 2654435761) % 10000, printf('%d,%d,%d', x % 11, x % 13, x % 17) FROM n;
COMMIT;
BEGIN;
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 60000)
INSERT INTO orders SELECT x, 1 + (x * 7919) % 12000, 1 + (x * 104729) % 5000, 1 + x % 9,
    CASE WHEN x % 5 = 0 THEN hex(zeroblob(x % 300)) ELSE NULL END FROM n;
COMMIT;
CREATE INDEX orders_customer ON orders(customer_id);
CREATE INDEX orders_item ON orders(item_id, qty);
CREATE INDEX customer_city ON customer(city, score);
UPDATE orders SET qty = qty + 1 WHERE id % 7 = 0;
DELETE FROM orders WHERE id % 11 = 0;
.print == counts
SELECT (SELECT count(*) FROM customer), (SELECT count(*) FROM item), (SELECT count(*) FROM orders);
.print == join + group by
SELECT c.city, count(*), sum(o.qty * i.price), round(avg(c.score), 4)
  FROM orders o JOIN customer c ON c.id = o.customer_id JOIN item i ON i.id = o.item_id
  GROUP BY c.city ORDER BY c.city;
.print == top customers
SELECT c.name, sum(o.qty * i.price) AS spent
  FROM orders o JOIN customer c ON c.id = o.customer_id JOIN item i ON i.id = o.item_id
  GROUP BY c.id ORDER BY spent DESC, c.id LIMIT 15;
.print == window functions
SELECT city, name, score, rnk FROM (
  SELECT city, name, score, rank() OVER (PARTITION BY city ORDER BY score DESC, id) AS rnk FROM customer)
  WHERE rnk <= 2 ORDER BY city, rnk;
.print == group_concat over a big sort
SELECT length(group_concat(title, '|')), sum(length(tags)) FROM (SELECT title, tags FROM item ORDER BY tags, title DESC);
.print == recursive CTE (collatz)
WITH RECURSIVE c(start, x, steps) AS (
  SELECT value, value, 0 FROM (WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 3000) SELECT value FROM s)
  UNION ALL SELECT start, CASE WHEN x % 2 = 0 THEN x / 2 ELSE 3 * x + 1 END, steps + 1 FROM c WHERE x > 1)
SELECT start, max(steps) FROM c GROUP BY start ORDER BY max(steps) DESC, start LIMIT 10;
.print == distinct + like
SELECT count(DISTINCT note), count(*) FROM orders WHERE note LIKE '%00%';
.print == subquery
SELECT i.id, i.title FROM item i WHERE i.price > (SELECT avg(price) FROM item) AND i.id IN (SELECT item_id FROM orders WHERE qty > 8) ORDER BY i.id LIMIT 10;
VACUUM;
.print == integrity_check
PRAGMA integrity_check;
SQL
} >workload.sql

sqlite3 -bail test.db <workload.sql
echo "== dump"
sqlite3 test.db .dump | sha256sum
