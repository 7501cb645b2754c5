// DeadlineWheel: deadlines fire in the first tick at or after them, never
// before; rescheduling, cancelling and destroying links at any point.
#include <catch2/catch.hpp>

#include <memory>
#include <vector>

#include "broker/deadline_wheel.hpp"

using namespace mqttools::broker;
using namespace std::chrono_literals;

namespace {

struct Item : DeadlineLink {
    explicit Item(int i) : id(i) {}
    int id;
};

// A fixed origin on a tick boundary keeps the arithmetic readable.
const Clock::time_point t0{std::chrono::seconds(1000)};

std::vector<int> advance(DeadlineWheel& w, Clock::time_point now) {
    std::vector<int> fired;
    w.advance(now, [&](DeadlineLink& l) { fired.push_back(static_cast<Item&>(l).id); });
    return fired;
}

}  // namespace

TEST_CASE("a deadline fires at its tick, not before") {
    DeadlineWheel w(t0);
    Item a(1), b(2);
    w.schedule(a, t0 + 250ms);  // tick at +300 ms
    w.schedule(b, t0 + 1500ms);
    CHECK(w.next_tick() == t0 + 300ms);
    CHECK(advance(w, t0 + 200ms).empty());
    CHECK(advance(w, t0 + 299ms).empty());
    CHECK(advance(w, t0 + 300ms) == std::vector<int>{1});
    CHECK_FALSE(a.scheduled());
    CHECK(b.scheduled());
    CHECK(w.next_tick() == t0 + 1500ms);
    CHECK(advance(w, t0 + 1499ms).empty());
    CHECK(advance(w, t0 + 1500ms) == std::vector<int>{2});
    CHECK(w.next_tick() == Clock::time_point::max());
}

TEST_CASE("rescheduling moves a deadline; cancelling and destroying remove it") {
    DeadlineWheel w(t0);
    Item a(1), b(2);
    w.schedule(a, t0 + 200ms);
    w.schedule(a, t0 + 900ms);  // moved later: nothing at +200 ms
    w.schedule(b, t0 + 400ms);
    DeadlineWheel::cancel(b);
    {
        Item c(3);
        w.schedule(c, t0 + 300ms);
    }  // destroyed while scheduled: unlinked
    CHECK(advance(w, t0 + 800ms).empty());
    CHECK(advance(w, t0 + 900ms) == std::vector<int>{1});
}

TEST_CASE("deadlines beyond one turn of the wheel wait for their turn") {
    DeadlineWheel w(t0);
    Item far(1), near(2);
    // 1024 ticks = 102.4 s: +150 s shares a slot with +47.6 s.
    w.schedule(far, t0 + 150s);
    w.schedule(near, t0 + 47600ms);
    CHECK(advance(w, t0 + 47600ms) == std::vector<int>{2});
    CHECK(far.scheduled());
    CHECK(advance(w, t0 + 149900ms).empty());
    CHECK(advance(w, t0 + 150s) == std::vector<int>{1});
}

TEST_CASE("a callback may reschedule, cancel or schedule others") {
    DeadlineWheel w(t0);
    Item a(1), b(2), c(3);
    w.schedule(a, t0 + 100ms);
    w.schedule(b, t0 + 100ms);
    int calls = 0;
    w.advance(t0 + 100ms, [&](DeadlineLink& l) {
        ++calls;
        auto& item = static_cast<Item&>(l);
        if (item.id == 1) {
            DeadlineWheel::cancel(b);         // removes one still pending in this slot
            w.schedule(a, t0 + 100ms);        // due again: next tick, not this pass
            w.schedule(c, t0 + 1s);
        }
    });
    CHECK(calls == 1);
    CHECK(a.scheduled());
    CHECK_FALSE(b.scheduled());
    CHECK(advance(w, t0 + 200ms) == std::vector<int>{1});
    CHECK(advance(w, t0 + 1s) == std::vector<int>{3});
}

TEST_CASE("a long stall visits every slot once and fires everything due") {
    DeadlineWheel w(t0);
    std::vector<std::unique_ptr<Item>> items;
    for (int i = 0; i < 3000; ++i) {
        items.push_back(std::make_unique<Item>(i));
        w.schedule(*items.back(), t0 + std::chrono::milliseconds(100 + i * 70));
    }
    auto fired = advance(w, t0 + 1000s);
    CHECK(fired.size() == 3000);
    CHECK(w.next_tick() == Clock::time_point::max());
}
