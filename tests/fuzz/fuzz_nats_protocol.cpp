// libFuzzer target for the NATS client protocol codec
// (src/cluster/nats_protocol.*). The input is a server byte stream: parsed
// whole, and again fed in pieces (sizes from the first byte) as reads
// deliver it; both must give the same messages, every view must lie inside
// the buffer, and a malformed stream must say why. INFO bodies also go
// through parse_info, HMSG headers through header_status/header_value.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/nats_protocol.hpp"

using namespace mqttools::cluster::nats;

namespace {

#define FUZZ_CHECK(cond)       \
    do {                       \
        if (!(cond)) abort();  \
    } while (0)

struct Seen {
    ServerOp op;
    std::string subject, reply, headers, payload;
    std::uint64_t sid;
};

bool inside(std::string_view part, std::string_view buf) {
    return part.empty() || (part.data() >= buf.data() && part.data() + part.size() <= buf.data() + buf.size());
}

Seen seen(const ServerMessage& m) {
    return {m.op, std::string(m.subject), std::string(m.reply), std::string(m.headers), std::string(m.payload), m.sid};
}

bool same(const Seen& a, const Seen& b) {
    return a.op == b.op && a.subject == b.subject && a.reply == b.reply && a.headers == b.headers &&
           a.payload == b.payload && a.sid == b.sid;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const std::size_t piece = 1 + data[0] % 64;
    const std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
    constexpr std::size_t max_line = 256;
    constexpr std::size_t max_payload = 4096;

    std::vector<Seen> whole;
    bool whole_malformed = false;
    for (std::size_t used = 0;;) {
        const ParseResult r = parse_server(in.substr(used), max_line, max_payload);
        if (r.status == ParseStatus::malformed) {
            FUZZ_CHECK(r.error != nullptr);
            whole_malformed = true;
            break;
        }
        if (r.status == ParseStatus::incomplete) break;
        FUZZ_CHECK(r.consumed > 0 && used + r.consumed <= in.size());
        const std::string_view buf = in.substr(used, r.consumed);
        const ServerMessage& m = r.message;
        FUZZ_CHECK(inside(m.subject, buf) && inside(m.reply, buf) && inside(m.headers, buf) &&
                   inside(m.payload, buf) && inside(m.text, buf));
        FUZZ_CHECK(m.payload.size() + m.headers.size() <= max_payload);
        if (m.op == ServerOp::info) {
            ServerInfo info;
            if (parse_info(m.text, info)) FUZZ_CHECK(info.max_payload > 0);
        }
        if (m.op == ServerOp::hmsg) {
            const int status = header_status(m.headers);
            FUZZ_CHECK(status >= 0 && status <= 999);
            (void)header_value(m.headers, "Nats-Msg-Id");
        }
        whole.push_back(seen(m));
        used += r.consumed;
    }

    std::string buf;
    std::size_t k = 0;
    bool split_malformed = false;
    for (std::size_t pos = 0; pos < in.size() && !split_malformed;) {
        const std::size_t n = std::min(piece, in.size() - pos);
        buf.append(in.substr(pos, n));
        pos += n;
        for (;;) {
            const ParseResult r = parse_server(buf, max_line, max_payload);
            if (r.status == ParseStatus::malformed) {
                split_malformed = true;
                break;
            }
            if (r.status == ParseStatus::incomplete) break;
            FUZZ_CHECK(k < whole.size() && same(seen(r.message), whole[k]));
            ++k;
            buf.erase(0, r.consumed);
        }
    }
    FUZZ_CHECK(k == whole.size());
    FUZZ_CHECK(split_malformed == whole_malformed);
    return 0;
}
