#include "latency_hist.hpp"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace bench {

namespace {

// Values below 2^(sub_bits + 1) have a bucket each; above, a value with
// bit width w falls in bucket (e << sub_bits) + (v >> e), e = w − sub_bits − 1,
// whose top sub_bits + 1 bits are those of v: the buckets are contiguous.
constexpr std::size_t bucket_count = (32 - 7) * 128 + 256;

}  // namespace

LatencyHistogram::LatencyHistogram() : counts_(bucket_count, 0) {}

std::size_t LatencyHistogram::index_of(std::uint32_t ns) noexcept {
    constexpr std::uint32_t exact = 1u << (sub_bits + 1);
    if (ns < exact) return ns;
    const int e = static_cast<int>(std::bit_width(ns)) - sub_bits - 1;
    return (static_cast<std::size_t>(e) << sub_bits) + (ns >> e);
}

double LatencyHistogram::middle_of(std::size_t index) noexcept {
    constexpr std::size_t exact = std::size_t{1} << (sub_bits + 1);
    if (index < exact) return static_cast<double>(index);
    const std::size_t e = (index >> sub_bits) - 1;
    const std::size_t m = index - (e << sub_bits);
    const double lower = static_cast<double>(m << e);
    return lower + static_cast<double>(std::size_t{1} << e) / 2.0;
}

void LatencyHistogram::add(std::uint32_t ns) noexcept {
    ++counts_[index_of(ns)];
    ++count_;
    if (ns > max_) max_ = ns;
}

void LatencyHistogram::merge(const LatencyHistogram& other) {
    for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    if (other.max_ > max_) max_ = other.max_;
}

double LatencyHistogram::percentile_us(double p) const noexcept {
    if (count_ == 0) return 0;
    const auto rank = static_cast<std::uint64_t>(p / 100.0 * static_cast<double>(count_ - 1) + 0.5);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
        seen += counts_[i];
        if (seen > rank) return std::min(middle_of(i), static_cast<double>(max_)) / 1000.0;
    }
    return max_us();
}

std::string LatencyHistogram::serialize() const {
    std::string out = std::to_string(max_);
    for (std::size_t i = 0; i < counts_.size(); ++i) {
        if (counts_[i] != 0) out += " " + std::to_string(i) + ":" + std::to_string(counts_[i]);
    }
    return out;
}

bool LatencyHistogram::parse(const std::string& text) {
    std::istringstream in(text);
    std::uint64_t max = 0;
    if (!(in >> max) || max > UINT32_MAX) return false;
    std::string item;
    while (in >> item) {
        const auto colon = item.find(':');
        if (colon == std::string::npos) return false;
        const std::size_t i = std::strtoull(item.c_str(), nullptr, 10);
        const std::uint64_t n = std::strtoull(item.c_str() + colon + 1, nullptr, 10);
        if (i >= counts_.size()) return false;
        counts_[i] += n;
        count_ += n;
    }
    if (max > max_) max_ = static_cast<std::uint32_t>(max);
    return true;
}

}  // namespace bench
