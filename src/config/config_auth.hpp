// The [auth_http] and [auth_jwt] tables (config_auth.cpp). Internal to src/config.
#pragma once

#include "config/config_cluster.hpp"

namespace mqttools::config {

void check_auth_http(const toml::table& table, AuthHttp& out, const SectionChecker& c);
void check_auth_jwt(const toml::table& table, AuthJwt& out, const SectionChecker& c);

}  // namespace mqttools::config
