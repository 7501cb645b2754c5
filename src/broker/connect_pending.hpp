// The broker's CONNECTs that wait for the AuthPool (connect_pending.cpp).
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/auth/auth_pool.hpp"
#include "broker/broker.hpp"

namespace mqttools::broker {

struct Broker::PendingConnects final : net::IoHandler {
    struct Entry {
        Connection* connection = nullptr;  // null once it closed
        std::string client_id;
        FixedHeader header;
        // The CONNECT packet's body (it holds the password): decoded again
        // when the answer comes, wiped when the entry goes.
        std::vector<std::byte> body;
        bool assigned = false;  // the broker chose the client id
        bool done = false;
        ReasonCode reason = ReasonCode::unspecified_error;

        Entry() = default;
        Entry(Entry&&) = default;
        Entry& operator=(Entry&&) = default;
        ~Entry();
    };

    PendingConnects(Broker& b, unsigned threads);
    ~PendingConnects();
    void on_io(std::uint32_t) override { broker.on_auth_results(); }

    Broker& broker;
    auth::AuthPool pool;
    std::uint64_t next_ticket = 1;
    std::unordered_map<std::uint64_t, Entry> entries;
    // Per client id, the tickets in the order their CONNECTs arrived.
    std::unordered_map<std::string, std::deque<std::uint64_t>> order;
    std::vector<auth::AuthPool::Result> results;  // reused
};

}  // namespace mqttools::broker
