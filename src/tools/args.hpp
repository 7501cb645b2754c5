// A small argparse-like command-line parser for the mqttools subcommands:
// --name VALUE, --name=VALUE, flags, integer ranges, positionals, --help.
#pragma once

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace mqttools::tools {

// A usage mistake: main prints "error: <what>" and exits with status 1.
class UsageError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class ArgParser {
public:
    ArgParser(std::string prog, std::string description);

    void flag(const std::string& name, bool& target, const std::string& help);
    void string(const std::string& name, std::string& target, const std::string& help);
    // Repeatable: every occurrence is appended.
    void strings(const std::string& name, std::vector<std::string>& target, const std::string& help);
    void integer(const std::string& name, std::int64_t min, std::int64_t max, std::int64_t& target,
                 const std::string& help);
    void integers(const std::string& name, std::int64_t min, std::int64_t max, std::vector<std::int64_t>& target,
                  const std::string& help);
    void choice(const std::string& name, const std::vector<std::string>& choices, std::string& target,
                const std::string& help);
    // An option that reads its own values: `consume(argc, argv, i)` gets the
    // index of the option itself and returns the index of its last value
    // (e.g. mosquitto's "-D COMMAND NAME VALUE..."). `metavar` is shown in
    // the help.
    void custom(const std::string& name, const std::string& metavar,
                std::function<int(int argc, char** argv, int i)> consume, const std::string& help);
    // Another name for an option, e.g. mosquitto_pub's "-p" for "--port".
    // "-h" as an alias is taken when a value follows it ("-h HOST");
    // alone it still asks for help.
    void alias(const std::string& other, const std::string& name);

    // Positionals in order; `required` false makes it (and the rest) optional.
    void positional(const std::string& name, std::string& target, bool required, const std::string& help);
    void positionals(const std::string& name, std::vector<std::string>& target, const std::string& help);

    // Parses argv[first..argc). Returns false when --help was printed.
    // Throws UsageError.
    bool parse(int argc, char** argv, int first);
    std::string usage() const;

private:
    struct Opt {
        std::string name;
        bool takes_value;
        std::string help;
        std::function<void(const std::string&)> apply;
        std::function<int(int, char**, int)> consume = nullptr;  // custom options only
        std::string metavar = "VALUE";
    };
    struct Pos {
        std::string name;
        bool required;
        bool many;
        std::string help;
        std::function<void(const std::string&)> apply;
    };
    std::string prog_;
    std::string description_;
    std::vector<Opt> opts_;
    std::vector<Pos> pos_;
    std::vector<std::pair<std::string, std::string>> aliases_;
};

// Parses an integer in [min, max] (decimal or 0x hex); throws UsageError
// naming `what`.
std::int64_t parse_integer(const std::string& text, std::int64_t min, std::int64_t max, const std::string& what);

}  // namespace mqttools::tools
