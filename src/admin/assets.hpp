// The dashboard's files, built into the binary (embed_assets.py makes
// assets.cpp from src/admin/assets/ at build time): brokers run offline,
// so the page fetches nothing from any other place.
#pragma once

#include <string_view>

namespace mqttools::admin {

struct Asset {
    std::string_view path;          // "/", "/app.js"
    std::string_view content_type;  // "text/html; charset=utf-8"
    std::string_view body;
};

// The file served at `path` ("/" is index.html), or null.
const Asset* find_asset(std::string_view path);

}  // namespace mqttools::admin
