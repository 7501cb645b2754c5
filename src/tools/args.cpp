#include "tools/args.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace mqttools::tools {

std::int64_t parse_integer(const std::string& text, std::int64_t min, std::int64_t max, const std::string& what) {
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(text.c_str(), &end, 0);
    if (text.empty() || errno != 0 || end == nullptr || *end != '\0') {
        throw UsageError("argument " + what + ": invalid integer '" + text + "'");
    }
    if (v < min || v > max) {
        throw UsageError("argument " + what + ": " + text + " is not in the range " + std::to_string(min) + ".." +
                         std::to_string(max));
    }
    return v;
}

ArgParser::ArgParser(std::string prog, std::string description)
    : prog_(std::move(prog)), description_(std::move(description)) {}

void ArgParser::flag(const std::string& name, bool& target, const std::string& help) {
    opts_.push_back({name, false, help, [&target](const std::string&) { target = true; }});
}

void ArgParser::string(const std::string& name, std::string& target, const std::string& help) {
    opts_.push_back({name, true, help, [&target](const std::string& v) { target = v; }});
}

void ArgParser::strings(const std::string& name, std::vector<std::string>& target, const std::string& help) {
    opts_.push_back({name, true, help, [&target](const std::string& v) { target.push_back(v); }});
}

void ArgParser::integer(const std::string& name, std::int64_t min, std::int64_t max, std::int64_t& target,
                        const std::string& help) {
    opts_.push_back({name, true, help,
                     [&target, min, max, name](const std::string& v) { target = parse_integer(v, min, max, name); }});
}

void ArgParser::integers(const std::string& name, std::int64_t min, std::int64_t max,
                         std::vector<std::int64_t>& target, const std::string& help) {
    opts_.push_back({name, true, help, [&target, min, max, name](const std::string& v) {
                         target.push_back(parse_integer(v, min, max, name));
                     }});
}

void ArgParser::choice(const std::string& name, const std::vector<std::string>& choices, std::string& target,
                       const std::string& help) {
    opts_.push_back({name, true, help, [&target, choices, name](const std::string& v) {
                         for (const auto& c : choices) {
                             if (c == v) {
                                 target = v;
                                 return;
                             }
                         }
                         std::string list;
                         for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
                         throw UsageError("argument " + name + ": invalid choice '" + v + "' (choose from " + list +
                                          ")");
                     }});
}

void ArgParser::positional(const std::string& name, std::string& target, bool required, const std::string& help) {
    pos_.push_back({name, required, false, help, [&target](const std::string& v) { target = v; }});
}

void ArgParser::positionals(const std::string& name, std::vector<std::string>& target, const std::string& help) {
    pos_.push_back({name, false, true, help, [&target](const std::string& v) { target.push_back(v); }});
}

void ArgParser::custom(const std::string& name, const std::string& metavar,
                       std::function<int(int, char**, int)> consume, const std::string& help) {
    opts_.push_back({name, true, help, nullptr, std::move(consume), metavar});
}

void ArgParser::alias(const std::string& other, const std::string& name) { aliases_.emplace_back(other, name); }

std::string ArgParser::usage() const {
    std::string u = "usage: " + prog_;
    for (const auto& o : opts_) u += " [" + o.name + (o.takes_value ? " " + o.metavar + "]" : "]");
    for (const auto& p : pos_) {
        std::string n = p.many ? p.name + "..." : p.name;
        u += p.required ? " " + n : " [" + n + "]";
    }
    u += "\n\n" + description_ + "\n";
    if (!pos_.empty()) {
        u += "\npositional arguments:\n";
        for (const auto& p : pos_) u += "  " + p.name + std::string(p.name.size() < 28 ? 28 - p.name.size() : 1, ' ') + p.help + "\n";
    }
    u += "\noptions:\n  -h, --help                  Show this help message and exit.\n";
    for (const auto& o : opts_) {
        std::string n;
        for (const auto& [other, long_name] : aliases_) {
            if (long_name == o.name) n += other + ", ";
        }
        n += o.name + (o.takes_value ? " " + o.metavar : "");
        u += "  " + n + (n.size() < 28 ? std::string(28 - n.size(), ' ') : "\n" + std::string(30, ' ')) + o.help + "\n";
    }
    return u;
}

bool ArgParser::parse(int argc, char** argv, int first) {
    std::size_t next_pos = 0;
    bool only_positionals = false;
    for (int i = first; i < argc; ++i) {
        const std::string arg = argv[i];
        if (!only_positionals && arg == "--") {
            only_positionals = true;
            continue;
        }
        const bool h_is_alias = arg == "-h" && i + 1 < argc && argv[i + 1][0] != '-' &&
                                std::any_of(aliases_.begin(), aliases_.end(),
                                            [](const auto& a) { return a.first == "-h"; });
        if (!only_positionals && !h_is_alias && (arg == "-h" || arg == "--help")) {
            std::fputs(usage().c_str(), stdout);
            return false;
        }
        if (!only_positionals && arg.size() > 1 && arg[0] == '-') {
            std::string name = arg;
            std::string value;
            bool has_value = false;
            if (const auto eq = arg.find('='); eq != std::string::npos && arg.starts_with("--")) {
                name = arg.substr(0, eq);
                value = arg.substr(eq + 1);
                has_value = true;
            }
            for (const auto& [other, long_name] : aliases_) {
                if (other == name) name = long_name;
            }
            const Opt* found = nullptr;
            for (const auto& o : opts_) {
                if (o.name == name) found = &o;
            }
            if (found == nullptr) throw UsageError("unrecognized argument '" + arg + "'");
            if (found->consume) {
                if (has_value) throw UsageError("argument " + name + ": give its values as separate arguments");
                i = found->consume(argc, argv, i);
                continue;
            }
            if (found->takes_value && !has_value) {
                if (i + 1 >= argc) throw UsageError("argument " + name + ": expected a value");
                value = argv[++i];
            } else if (!found->takes_value && has_value) {
                throw UsageError("argument " + name + ": takes no value");
            }
            found->apply(value);
            continue;
        }
        if (next_pos >= pos_.size()) throw UsageError("unrecognized argument '" + arg + "'");
        pos_[next_pos].apply(arg);
        if (!pos_[next_pos].many) ++next_pos;
    }
    for (std::size_t p = next_pos; p < pos_.size(); ++p) {
        if (pos_[p].required) throw UsageError("the following argument is required: " + pos_[p].name);
    }
    return true;
}

}  // namespace mqttools::tools
