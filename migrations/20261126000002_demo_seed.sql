-- Seed data: 10,000 products (about 330 bytes of JSON each when cached), 1,000 users, 2,000 sessions (half of them
-- active in the last 30 minutes) and 20,000 orders spread over the last 48 hours. Deterministic: no RAND().

CREATE TEMPORARY TABLE demo_digits (d INT NOT NULL);
INSERT INTO demo_digits VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9);
CREATE TEMPORARY TABLE demo_seq (n INT NOT NULL PRIMARY KEY);
INSERT INTO demo_seq (n)
SELECT 1 + a.d + 10 * b.d + 100 * c.d + 1000 * e.d
FROM demo_digits a, demo_digits b, demo_digits c, demo_digits e;

INSERT INTO products (id, sku, name, description, category_id, price, stock, sales, views, attributes, updated_at)
SELECT
    n,
    CONCAT('SKU-', LPAD(n, 6, '0')),
    CONCAT(ELT(1 + n % 5, 'Classic', 'Deluxe', 'Compact', 'Eco', 'Pro'), ' ',
           ELT(1 + n % 7, 'Kettle', 'Backpack', 'Desk Lamp', 'Headphones', 'Water Bottle', 'Notebook', 'Chair'),
           ' ', n),
    CONCAT('A dependable everyday product from the demo shop catalog, item ', n,
           '. Ships within two days; thirty-day returns.'),
    1 + n % 20,
    ROUND(4.99 + (n * 7919 % 50000) / 100, 2),
    n * 31 % 500,
    (n * 2654435761) % 100000,
    (n * 40503) % 1000000,
    JSON_OBJECT('color', ELT(1 + n % 4, 'red', 'blue', 'black', 'green'),
                'size', ELT(1 + n % 3, 'S', 'M', 'L'),
                'warranty_years', 1 + n % 3),
    TIMESTAMP('2026-11-01 00:00:00') + INTERVAL n MINUTE
FROM demo_seq;

INSERT INTO users (id, email, name, password_hash, created_at)
SELECT n, CONCAT('user', n, '@example.com'), CONCAT('User ', n), SHA2(CONCAT('pw', n), 256),
       TIMESTAMP('2026-01-01 00:00:00') + INTERVAL n HOUR
FROM demo_seq WHERE n <= 1000;

INSERT INTO sessions (token, user_id, data, created_at, last_seen_at)
SELECT SHA2(CONCAT('session', n), 256), 1 + n % 1000,
       JSON_OBJECT('cart_items', n % 6, 'locale', ELT(1 + n % 3, 'en', 'de', 'fr')),
       NOW() - INTERVAL (n % 240) MINUTE - INTERVAL 1 HOUR,
       NOW() - INTERVAL (n % 60) MINUTE
FROM demo_seq WHERE n <= 2000;

INSERT INTO orders (id, user_id, product_id, amount, created_at)
SELECT a.n + 10000 * b.k, 1 + (a.n * 7 + b.k) % 1000, 1 + (a.n * 13 + b.k) % 10000,
       ROUND(9.99 + ((a.n + b.k) * 104729 % 20000) / 100, 2),
       NOW() - INTERVAL ((a.n * 17 + b.k * 5) % 2880) MINUTE
FROM demo_seq a, (SELECT 0 AS k UNION ALL SELECT 1) b;

DROP TEMPORARY TABLE demo_seq;
DROP TEMPORARY TABLE demo_digits;
