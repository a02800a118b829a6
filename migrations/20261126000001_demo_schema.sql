-- The demo shop from the seed's scenarios: a product catalog, users with sessions, and orders.
-- Runs on MariaDB 10.11 and MySQL 8 alike.

CREATE TABLE products (
    id          BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    sku         VARCHAR(32)     NOT NULL UNIQUE,
    name        VARCHAR(200)    NOT NULL,
    description TEXT            NOT NULL,
    category_id INT UNSIGNED    NOT NULL,
    price       DECIMAL(10, 2)  NOT NULL,
    stock       INT             NOT NULL,
    sales       INT UNSIGNED    NOT NULL DEFAULT 0,
    views       INT UNSIGNED    NOT NULL DEFAULT 0,
    attributes  JSON            NOT NULL,
    updated_at  TIMESTAMP       NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    KEY products_by_sales (sales),
    KEY products_by_category (category_id)
);

CREATE TABLE users (
    id            BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    email         VARCHAR(200)    NOT NULL UNIQUE,
    name          VARCHAR(200)    NOT NULL,
    -- Never cached: cachewarden refuses columns with names like this unless a job allows them.
    password_hash CHAR(64)        NOT NULL,
    created_at    DATETIME        NOT NULL
);

CREATE TABLE sessions (
    token        CHAR(64)        NOT NULL PRIMARY KEY,
    user_id      BIGINT UNSIGNED NOT NULL,
    data         JSON            NOT NULL,
    created_at   DATETIME        NOT NULL,
    last_seen_at DATETIME        NOT NULL,
    KEY sessions_by_last_seen (last_seen_at)
);

CREATE TABLE orders (
    id         BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    user_id    BIGINT UNSIGNED NOT NULL,
    product_id BIGINT UNSIGNED NOT NULL,
    amount     DECIMAL(10, 2)  NOT NULL,
    created_at DATETIME        NOT NULL,
    KEY orders_by_created (created_at)
);
