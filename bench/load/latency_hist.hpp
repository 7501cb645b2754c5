// A latency histogram that several generator processes can merge (--procs):
// log-linear buckets, exact below 256 ns, then 128 per power of two (under
// 0.8 % relative width), so percentiles of the merged histogram are those
// of all samples together, not an average of per-process percentiles.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bench {

class LatencyHistogram {
public:
    LatencyHistogram();

    void add(std::uint32_t ns) noexcept;
    void merge(const LatencyHistogram& other);

    std::uint64_t count() const noexcept { return count_; }
    // The p-th percentile (0..100) in µs: the middle of the bucket holding
    // the sample of rank round(p / 100 × (count − 1)), as the exact
    // percentiles of a single process are ranked.
    double percentile_us(double p) const noexcept;
    double max_us() const noexcept { return static_cast<double>(max_) / 1000.0; }

    // "MAX INDEX:COUNT INDEX:COUNT ..." (non-empty buckets only) and back.
    std::string serialize() const;
    bool parse(const std::string& text);

private:
    static constexpr int sub_bits = 7;
    static std::size_t index_of(std::uint32_t ns) noexcept;
    static double middle_of(std::size_t index) noexcept;

    std::vector<std::uint64_t> counts_;
    std::uint64_t count_ = 0;
    std::uint32_t max_ = 0;
};

}  // namespace bench
