// `mqttools dynsec init FILE USER [PASSWORD]`: a new dynamic-security.json
// with one admin client, as `mosquitto_ctrl dynsec init` makes it (role
// "admin": the $CONTROL/dynamic-security API and reading everything;
// clients may not publish or subscribe by default). The file loads in
// mqttoolsd (dynamic_security_file) and in Mosquitto's plugin.
#include <cstdio>
#include <string>
#include <string_view>
#include <sys/stat.h>

#include "broker/auth/dynsec.hpp"
#include "tools/passwd_command.hpp"

namespace mqttools::tools {

namespace {

constexpr const char* dynsec_usage =
    "usage: mqttools dynsec init FILE USER [PASSWORD]\n"
    "\n"
    "Creates FILE (Mosquitto's dynamic-security.json) with the admin client USER.\n"
    "Without PASSWORD it is asked for (twice). Manage the file live with\n"
    "mosquitto_ctrl dynsec ... against a broker started with\n"
    "dynamic_security_file = \"FILE\".\n";

int fail(const std::string& message) {
    std::fprintf(stderr, "Error: %s\n", message.c_str());
    return 1;
}

}  // namespace

int run_dynsec_command(int argc, char** argv) {
    if (argc >= 2 && (std::string_view(argv[1]) == "-h" || std::string_view(argv[1]) == "--help")) {
        std::fputs(dynsec_usage, stdout);
        return 0;
    }
    if (argc < 2 || std::string_view(argv[1]) != "init") {
        std::fputs(dynsec_usage, stderr);
        return fail("the only subcommand is 'init'");
    }
    if (argc < 4 || argc > 5) {
        std::fputs(dynsec_usage, stderr);
        return fail(argc < 4 ? "FILE and USER are required" : "too many arguments");
    }
    const std::string file = argv[2];
    const std::string user = argv[3];
    if (user.empty()) return fail("USER must not be empty");
    struct stat st {};
    if (::stat(file.c_str(), &st) == 0) {
        return fail("'" + file + "' already exists. Remove the file or use a different location.");
    }
    std::string password;
    if (argc == 5) {
        password = argv[4];
    } else {
        auto typed = prompt_new_password();
        if (!typed) return 1;
        password = std::move(*typed);
    }
    auto d = auth::dynsec::Dynsec::make_initial(user, password);
    if (!d) return fail("cannot make a random salt");
    std::string why;
    if (!d->save(file, &why)) return fail(why);
    std::printf("The client '%s' has been created in the file '%s'.\n", user.c_str(), file.c_str());
    std::printf("It may administer dynamic security only (mosquitto_ctrl dynsec ...).\n");
    return 0;
}

}  // namespace mqttools::tools
