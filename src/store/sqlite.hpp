// Thin owning wrappers over the SQLite C API (a connection, a prepared
// statement): no exceptions, every call returns the SQLite result code.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace mqttools::store {

class Db {
public:
    Db() = default;
    ~Db() { close(); }
    Db(Db&& o) noexcept : db_(o.db_) { o.db_ = nullptr; }
    Db& operator=(Db&& o) noexcept {
        if (this != &o) {
            close();
            db_ = o.db_;
            o.db_ = nullptr;
        }
        return *this;
    }
    Db(const Db&) = delete;
    Db& operator=(const Db&) = delete;

    int open(const std::string& path, int flags);
    void close() noexcept;
    // Runs SQL without results; false on error (message()).
    bool exec(const char* sql);
    std::string message() const { return db_ ? sqlite3_errmsg(db_) : "out of memory"; }
    sqlite3* get() const noexcept { return db_; }
    explicit operator bool() const noexcept { return db_ != nullptr; }

private:
    sqlite3* db_ = nullptr;
};

class Stmt {
public:
    Stmt() = default;
    ~Stmt() { sqlite3_finalize(s_); }
    Stmt(Stmt&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
    Stmt& operator=(Stmt&& o) noexcept {
        if (this != &o) {
            sqlite3_finalize(s_);
            s_ = o.s_;
            o.s_ = nullptr;
        }
        return *this;
    }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;

    int prepare(const Db& db, const char* sql) {
        sqlite3_finalize(s_);
        s_ = nullptr;
        return sqlite3_prepare_v3(db.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &s_, nullptr);
    }

    void bind(int i, std::int64_t v) { sqlite3_bind_int64(s_, i, v); }
    // Neither is copied: the bytes must live until step() and reset().
    void bind_text(int i, std::string_view v) {
        sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
    }
    void bind_blob(int i, std::string_view v) {
        sqlite3_bind_blob(s_, i, v.empty() ? "" : v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
    }
    void bind_null(int i) { sqlite3_bind_null(s_, i); }

    int step() { return sqlite3_step(s_); }
    void reset() {
        sqlite3_reset(s_);
        sqlite3_clear_bindings(s_);
    }
    // Steps until done (RETURNING rows are read with the first step), then
    // resets. SQLITE_DONE when it went well.
    int run() {
        int rc;
        while ((rc = sqlite3_step(s_)) == SQLITE_ROW) {
        }
        reset();
        return rc;
    }

    std::int64_t integer(int i) const { return sqlite3_column_int64(s_, i); }
    bool null(int i) const { return sqlite3_column_type(s_, i) == SQLITE_NULL; }
    std::string_view text(int i) const {
        const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, i));
        return p ? std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, i))) : std::string_view{};
    }
    std::string_view blob(int i) const {
        const auto* p = static_cast<const char*>(sqlite3_column_blob(s_, i));
        return p ? std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, i))) : std::string_view{};
    }
    explicit operator bool() const noexcept { return s_ != nullptr; }

private:
    sqlite3_stmt* s_ = nullptr;
};

}  // namespace mqttools::store
