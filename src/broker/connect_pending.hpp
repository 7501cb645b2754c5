// The broker's CONNECTs that wait for an AuthChain answer, and the AuthHost
// the auth sources answer through (connect_pending.cpp).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/auth/auth_pool.hpp"
#include "broker/broker.hpp"

namespace mqttools::broker {

struct Broker::PendingConnects final : net::IoHandler, auth::AuthHost {
    struct Entry {
        Connection* connection = nullptr;  // null once it closed
        std::string client_id;
        FixedHeader header;
        // The CONNECT packet's body (it holds the password): decoded again
        // when the answer comes, wiped when the entry goes.
        std::vector<std::byte> body;
        bool assigned = false;  // the broker chose the client id
        bool done = false;
        auth::AuthResult result;
        // The chain this CONNECT is judged by (a reload meanwhile does not
        // change it) and the source whose answer is awaited.
        std::shared_ptr<const auth::AuthChain> chain;
        std::size_t at = 0;

        Entry() = default;
        Entry(Entry&&) = default;
        Entry& operator=(Entry&&) = default;
        ~Entry();
    };

    explicit PendingConnects(Broker& b);
    ~PendingConnects();
    void on_io(std::uint32_t) override { broker.on_auth_results(); }

    // auth::AuthHost
    net::Reactor& reactor() override { return broker.reactor_; }
    void run_blocking(std::uint64_t ticket, std::function<ReasonCode()> work,
                      std::function<auth::AuthResult(ReasonCode)> finish) override;
    void connect_answered(std::uint64_t ticket, auth::AuthResult result) override {
        broker.on_connect_answered(ticket, std::move(result));
    }
    void acl_answered(std::uint64_t waiter) override { broker.on_acl_answered(waiter); }

    Broker& broker;
    std::unique_ptr<auth::AuthPool> pool;  // made on first use
    std::uint64_t next_ticket = 1;
    std::unordered_map<std::uint64_t, Entry> entries;
    // run_blocking's second step, by ticket.
    std::unordered_map<std::uint64_t, std::function<auth::AuthResult(ReasonCode)>> finishers;
    // Per client id, the tickets in the order their CONNECTs arrived.
    std::unordered_map<std::string, std::deque<std::uint64_t>> order;
    std::vector<auth::AuthPool::Result> results;  // reused
};

}  // namespace mqttools::broker
