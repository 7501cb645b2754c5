// libFuzzer target for the WebSocket handshake and frame reader
// (src/net/websocket.*). The first byte picks the mode and the split size:
//   mode 0: the input is an upgrade request, fed to parse_request() growing
//           one piece at a time, as the transport does; an accepted head
//           must have a consistent consumed count and a 101 answer, a
//           rejected one an HTTP error.
//   mode 1/2: the input is a stream of frames read by the server (masked)
//           or client (unmasked) reader in pieces, in place; the bytes
//           produced must equal a second run over the whole input at once,
//           so how the stream is split never changes what comes out.
//   mode 3: parse_response() against a fixed key.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "net/websocket.hpp"

using namespace mqttools;
using namespace mqttools::net;

namespace {

#define FUZZ_CHECK(cond)       \
    do {                       \
        if (!(cond)) abort();  \
    } while (0)

struct Decoded {
    std::string data;
    std::vector<int> events;
    std::uint16_t code = 0;
};

Decoded run_frames(bool server, const std::uint8_t* in, std::size_t n, std::size_t step) {
    ws::FrameReader reader(server, 4096);
    Decoded res;
    std::vector<std::byte> buf;
    for (std::size_t at = 0; at < n && !reader.finished(); at += step) {
        const std::size_t len = std::min(step, n - at);
        buf.assign(reinterpret_cast<const std::byte*>(in + at), reinterpret_cast<const std::byte*>(in + at + len));
        std::size_t rd = 0, wr = 0;
        while (rd < len && !reader.finished()) {
            const auto s = reader.decode(buf.data() + rd, len - rd, buf.data() + wr);
            FUZZ_CHECK(s.consumed <= len - rd);
            FUZZ_CHECK(s.produced <= s.consumed);
            rd += s.consumed;
            wr += s.produced;
            if (s.event != ws::FrameReader::Event::none) {
                res.events.push_back(static_cast<int>(s.event));
                FUZZ_CHECK(reader.control_payload().size() <= ws::max_control_payload);
                if (s.event == ws::FrameReader::Event::error || s.event == ws::FrameReader::Event::close) {
                    res.code = reader.code();
                    FUZZ_CHECK(reader.finished());
                }
            } else {
                FUZZ_CHECK(rd == len);
            }
        }
        res.data.append(reinterpret_cast<const char*>(buf.data()), wr);
    }
    return res;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const int mode = data[0] & 3;
    const std::size_t step = (data[0] >> 2) + 1;
    ++data;
    --size;
    switch (mode) {
        case 0: {
            ws::ServerSettings settings;
            settings.headers_size = 1024;
            if (step > 32) settings.origins = {"http://example.com"};
            const std::string_view all(reinterpret_cast<const char*>(data), size);
            for (std::size_t have = std::min(step, size);; have = std::min(have + step, size)) {
                const auto r = ws::parse_request(all.substr(0, have), settings);
                if (r.status == ws::HandshakeStatus::accepted) {
                    FUZZ_CHECK(r.consumed >= 4 && r.consumed <= have);
                    FUZZ_CHECK(all.substr(r.consumed - 4, 4) == "\r\n\r\n");
                    FUZZ_CHECK(r.http_status == 101);
                    FUZZ_CHECK(r.response.find("Sec-WebSocket-Accept: ") != std::string::npos);
                    break;
                }
                if (r.status == ws::HandshakeStatus::rejected) {
                    FUZZ_CHECK(r.http_status >= 400 && r.http_status < 500);
                    FUZZ_CHECK(r.response.rfind("HTTP/1.1 4", 0) == 0);
                    break;
                }
                FUZZ_CHECK(have < settings.headers_size);
                if (have == size) break;
            }
            break;
        }
        case 1:
        case 2: {
            const bool server = mode == 1;
            const Decoded pieces = run_frames(server, data, size, step);
            const Decoded whole = run_frames(server, data, size, size ? size : 1);
            FUZZ_CHECK(pieces.data == whole.data);
            FUZZ_CHECK(pieces.events == whole.events);
            FUZZ_CHECK(pieces.code == whole.code);
            break;
        }
        default: {
            const auto r = ws::parse_response(std::string_view(reinterpret_cast<const char*>(data), size),
                                              "dGhlIHNhbXBsZSBub25jZQ==");
            if (r.status == ws::HandshakeStatus::accepted) FUZZ_CHECK(r.consumed <= size);
            break;
        }
    }
    return 0;
}
