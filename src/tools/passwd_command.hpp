// `mqttools passwd`: manages a Mosquitto-format password file like
// mosquitto_passwd does.
#pragma once

#include <optional>
#include <string>

namespace mqttools::tools {

// argv[0] is the subcommand name ("passwd"); the options follow:
//   passwd [-H sha512|sha512-pbkdf2] [-I ITERATIONS] [-c | -D] FILE USER
//   passwd [-H ...] [-I ...] [-c] -b FILE USER PASSWORD
//   passwd -U FILE
// Returns the process exit status (0 success, 1 error).
int run_passwd_command(int argc, char** argv);

// Asks for a new password twice (echo off on a terminal); nullopt (and a
// message on stderr) when none is given or the two differ.
std::optional<std::string> prompt_new_password();

// `mqttools dynsec init FILE USER [PASSWORD]` (dynsec_command.cpp).
int run_dynsec_command(int argc, char** argv);

}  // namespace mqttools::tools
