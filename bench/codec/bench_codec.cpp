// Codec micro-benchmarks: decode and encode of a 64-byte QoS 0 PUBLISH and of
// a CONNECT, in both versions. Global operator new/delete are replaced to
// count heap allocations; each benchmark reports them per iteration
// (target: 0 for decoding).
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "mqttools/codec.hpp"

namespace {
std::atomic<std::uint64_t> g_allocations{0};
}

// g++ 12 sees the library's operator new paired with our free() once the
// replacement is inlined and warns; the pairing is ours and is correct.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

void* operator new(std::size_t n) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

using namespace mqttools;

namespace {

struct AllocCounter {
    benchmark::State& state;
    std::uint64_t start = g_allocations.load(std::memory_order_relaxed);
    explicit AllocCounter(benchmark::State& s) : state(s) {}
    ~AllocCounter() {
        auto n = g_allocations.load(std::memory_order_relaxed) - start;
        state.counters["allocs/iter"] =
            benchmark::Counter(static_cast<double>(n), benchmark::Counter::kAvgIterations);
        state.SetItemsProcessed(state.iterations());
    }
};

const std::byte payload64[64] = {};

PublishPacket publish_qos0() {
    PublishPacket p;
    p.topic = "bench/topic/0001";
    p.payload = Bytes(payload64, sizeof payload64);
    return p;
}

ConnectPacket connect_packet(ProtocolVersion v) {
    ConnectPacket c;
    c.version = v;
    c.keep_alive = 60;
    c.client_id = "mqttools-0123456789abcd";
    c.username = "user";
    c.password = as_bytes("password");
    if (v == ProtocolVersion::v5) {
        c.properties.session_expiry_interval = 3600;
        c.properties.receive_maximum = 100;
        c.properties.topic_alias_maximum = 10;
        c.properties.maximum_packet_size = 1 << 20;
    }
    Will w;
    w.topic = "clients/mqttools/status";
    w.payload = as_bytes("offline");
    w.qos = QoS::at_least_once;
    w.retain = true;
    c.will = w;
    return c;
}

std::vector<std::byte> wire_of_publish(ProtocolVersion v) {
    auto p = publish_qos0();
    std::vector<std::byte> out(encoded_size(p, v));
    encode(p, v, MutableBytes(out));
    return out;
}

std::vector<std::byte> wire_of_connect(ProtocolVersion v) {
    auto c = connect_packet(v);
    std::vector<std::byte> out(encoded_size(c));
    encode(c, MutableBytes(out));
    return out;
}

ProtocolVersion version_arg(const benchmark::State& state) {
    return state.range(0) == 5 ? ProtocolVersion::v5 : ProtocolVersion::v311;
}

// Framing + decoding, as the broker does per received packet.
void BM_decode_publish_qos0_64(benchmark::State& state) {
    const auto v = version_arg(state);
    const auto wire = wire_of_publish(v);
    AllocCounter allocs(state);
    for (auto _ : state) {
        Bytes in(wire);
        benchmark::DoNotOptimize(in);
        Frame f = read_frame(in);
        auto r = decode_publish(f.header, in.subspan(f.header.header_size, f.header.remaining_length), v,
                                Sender::client);
        benchmark::DoNotOptimize(r);
    }
    state.SetLabel(std::to_string(wire.size()) + " B packet");
}
BENCHMARK(BM_decode_publish_qos0_64)->Arg(5)->Arg(4);

// The same through the generic decode_packet (variant result).
void BM_decode_packet_publish_qos0_64(benchmark::State& state) {
    const auto v = version_arg(state);
    const auto wire = wire_of_publish(v);
    AllocCounter allocs(state);
    for (auto _ : state) {
        Bytes in(wire);
        benchmark::DoNotOptimize(in);
        Frame f = read_frame(in);
        auto r = decode_packet(f.header, in.subspan(f.header.header_size, f.header.remaining_length), v,
                               Sender::client);
        benchmark::DoNotOptimize(r);
    }
}
BENCHMARK(BM_decode_packet_publish_qos0_64)->Arg(5)->Arg(4);

void BM_encode_publish_qos0_64(benchmark::State& state) {
    const auto v = version_arg(state);
    const auto p = publish_qos0();
    std::vector<std::byte> out(256);
    AllocCounter allocs(state);
    for (auto _ : state) {
        benchmark::DoNotOptimize(p);
        std::size_t n = encode(p, v, MutableBytes(out));
        benchmark::DoNotOptimize(n);
        benchmark::ClobberMemory();
    }
}
BENCHMARK(BM_encode_publish_qos0_64)->Arg(5)->Arg(4);

void BM_decode_connect(benchmark::State& state) {
    const auto v = version_arg(state);
    const auto wire = wire_of_connect(v);
    AllocCounter allocs(state);
    for (auto _ : state) {
        Bytes in(wire);
        benchmark::DoNotOptimize(in);
        Frame f = read_frame(in);
        auto r = decode_connect(f.header, in.subspan(f.header.header_size, f.header.remaining_length));
        benchmark::DoNotOptimize(r);
    }
    state.SetLabel(std::to_string(wire.size()) + " B packet");
}
BENCHMARK(BM_decode_connect)->Arg(5)->Arg(4);

void BM_encode_connect(benchmark::State& state) {
    const auto v = version_arg(state);
    const auto c = connect_packet(v);
    std::vector<std::byte> out(512);
    AllocCounter allocs(state);
    for (auto _ : state) {
        benchmark::DoNotOptimize(c);
        std::size_t n = encode(c, MutableBytes(out));
        benchmark::DoNotOptimize(n);
        benchmark::ClobberMemory();
    }
}
BENCHMARK(BM_encode_connect)->Arg(5)->Arg(4);

}  // namespace

BENCHMARK_MAIN();
