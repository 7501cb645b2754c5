#include "broker/connection.hpp"

#include <spdlog/spdlog.h>
#include <sys/epoll.h>

#include <algorithm>
#include <cstring>

#include "broker/broker.hpp"
#include "mqttools/describe.hpp"

namespace mqttools::broker {

namespace {
constexpr std::size_t read_chunk = 64 * 1024;
constexpr int max_reads_per_event = 4;  // then let other sockets have a turn
constexpr int max_iov = 64;
}  // namespace

Connection::Connection(Broker& broker, std::unique_ptr<net::Transport> transport)
    : broker_(broker), transport_(std::move(transport)) {
    last_received = broker_.reactor().now();
}

Connection::~Connection() = default;

void Connection::begin_deferral() {
    if (output_deferred) return;
    auto& queue = more().deferred;
    if (!queue) queue = std::make_unique<net::OutputQueue>();
    output_deferred = true;
}

std::unique_ptr<net::OutputQueue> Connection::end_deferral() {
    if (!output_deferred) return nullptr;
    output_deferred = false;
    return std::move(extras->deferred);
}

void Connection::append_output(net::OutputQueue& collected) {
    if (collected.empty()) return;
    output_.splice(collected);
    queued_packet();
}

void Connection::send_shared(const net::BufferRef& buffer, std::uint32_t size) {
    sink().append(buffer, 0, size);
    if (packet_debug) [[unlikely]] {
        // Already encoded (shared by many subscribers): decode it back for
        // the line, at debug only.
        const Bytes bytes(buffer.data(), size);
        const Frame frame = read_frame(bytes);
        if (frame.status == FrameStatus::complete) {
            const auto packet = decode_packet(frame.header, bytes.subspan(frame.header.header_size), version,
                                              Sender::server);
            if (packet) log_packet(false, *packet);
        }
    }
    queued_packet();
}

bool Connection::send_publish(const PublishPacket& packet, const net::BufferRef& payload) {
    const std::size_t size = encoded_size(packet, version);
    if (size == 0 || size > max_packet_size_out) return false;
    const std::size_t head = size - packet.payload.size();
    net::OutputQueue& out = sink();
    auto space = out.reserve(head);
    out.commit(encode_publish_head(packet, version, space));
    out.append(payload, 0, static_cast<std::uint32_t>(packet.payload.size()));
    if (packet_debug) [[unlikely]] log_packet(false, Packet(packet));
    queued_packet();
    return true;
}

void Connection::log_packet(bool received, const Packet& packet) const {
    // Before CONNECT is handled the client has no id yet: the address says
    // who it is.
    const std::string who = client_id.empty() ? peer() : client_id;
    std::string text = describe_packet(packet);
    const auto space = text.find(' ');
    const std::string type = text.substr(0, space);
    const std::string rest = space == std::string::npos ? std::string() : text.substr(space);
    spdlog::debug("{} {} {} {}{}", received ? "Received" : "Sending", type, received ? "from" : "to", who, rest);
}

void Connection::log_received(const FixedHeader& header, Bytes body) const {
    const auto packet = decode_packet(header, body, version, Sender::client);
    if (packet) {
        log_packet(true, *packet);
    } else {
        spdlog::debug("Received a bad {} from {}: {}", packet_type_name(header.type),
                      client_id.empty() ? peer() : client_id, reason_code_name(packet.error()));
    }
}

void Connection::queued_packet() {
    ++broker_.stats().messages_sent;
    if (!dirty) broker_.mark_dirty(*this);
}

void Connection::on_io(std::uint32_t events) {
    if (state == State::closing) return;
    if (reading_paused_ && (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        // Gone before its CONNACK: nothing it sent after CONNECT is processed.
        broker_.connection_lost(*this);
        return;
    }
    if (events & EPOLLOUT) {
        if (!flush()) return;
    }
    if (events & (EPOLLERR | EPOLLHUP)) {
        on_readable();
    } else if ((events & EPOLLIN) && !reading_paused_ && !reads_paused) {
        if (state != State::awaiting_connect) {
            on_readable();
        } else {
            broker_.setup_readable(*this);  // TLS handshake, WebSocket upgrade or CONNECT
        }
    }
    // TLS handshake records the socket did not take while reading: have the
    // before-sleep flush arm EPOLLOUT for them.
    if (state != State::closing && !dirty && transport_->wants_write()) broker_.mark_dirty(*this);
}

void Connection::on_readable() {
    for (int i = 0; i < max_reads_per_event && state != State::closing; ++i) {
        auto scratch = broker_.read_scratch();
        const std::size_t tail = pending_.size();
        net::IoResult r;
        std::size_t consumed = 0;
        std::size_t total = 0;
        if (tail + read_chunk <= scratch.size()) {
            // Usual case: put the leftover partial packet (if any) in front
            // of the shared read buffer, read behind it, decode in place.
            if (tail) std::memcpy(scratch.data(), pending_.data(), tail);
            r = transport_->read(scratch.subspan(tail, read_chunk));
            if (r.status != net::IoStatus::ok) {
                if (r.status == net::IoStatus::would_block) return;
                broker_.connection_lost(*this);
                return;
            }
            total = tail + r.bytes;
            last_received = broker_.reactor().now();
            broker_.stats().bytes_received += r.bytes;
            consumed = process(scratch.data(), total);
            if (state == State::closing) return;
            pending_.assign(scratch.data() + consumed, scratch.data() + total);
            if (reading_paused_) return;
        } else {
            // A packet bigger than the shared buffer: grow this
            // connection's own buffer (bounded by the maximum packet size).
            // Once its header is in, to the whole packet at once: doubling
            // up to a 16 MB payload would copy it a dozen times and leave
            // the smaller buffers behind in the heap.
            // (Plus a chunk: the last read may ask for more than the rest.)
            const Frame frame = read_frame({pending_.data(), tail}, broker_.max_packet_size_in());
            if (frame.status == FrameStatus::need_more && frame.header.header_size != 0 &&
                frame.header.packet_size() + read_chunk > pending_.capacity())
                pending_.reserve(frame.header.packet_size() + read_chunk);
            pending_.resize(tail + read_chunk);
            r = transport_->read({pending_.data() + tail, read_chunk});
            if (r.status != net::IoStatus::ok) {
                pending_.resize(tail);
                if (r.status == net::IoStatus::would_block) return;
                broker_.connection_lost(*this);
                return;
            }
            total = tail + r.bytes;
            last_received = broker_.reactor().now();
            broker_.stats().bytes_received += r.bytes;
            consumed = process(pending_.data(), total);
            if (state == State::closing) return;
            std::memmove(pending_.data(), pending_.data() + consumed, total - consumed);
            pending_.resize(total - consumed);
            if (reading_paused_) return;
        }
        if (pending_.empty() && pending_.capacity() > 4096) {
            std::vector<std::byte>().swap(pending_);
        }
        if (r.bytes < read_chunk) return;  // the socket is drained
    }
}

std::size_t Connection::process(std::byte* data, std::size_t size) {
    std::size_t pos = 0;
    if (state == State::awaiting_connect && size >= 4 && std::memcmp(data, "GET ", 4) == 0 &&
        transport_->label().empty()) {
        // An HTTP request where CONNECT belongs: a WebSocket client on a
        // plain MQTT listener. Say so, with who it was, then close.
        spdlog::info("Client {} refused: an HTTP request (a WebSocket upgrade?) on a plain MQTT listener; "
                     "WebSocket clients need a listener with protocol = \"websockets\".", peer());
        broker_.frame_error(*this, ReasonCode::protocol_error);
        return 0;
    }
    while (state != State::closing && !reading_paused_ && pos < size) {
        Bytes input(data + pos, size - pos);
        Frame frame = read_frame(input, broker_.max_packet_size_in());
        if (frame.status == FrameStatus::error) {
            broker_.frame_error(*this, frame.error);
            return pos;
        }
        if (frame.status == FrameStatus::need_more) break;
        Bytes body(data + pos + frame.header.header_size, frame.header.remaining_length);
        pos += frame.header.packet_size();
        ++broker_.stats().messages_received;
        broker_.handle_packet(*this, frame.header, body);
        if (replay_packet_) [[unlikely]] {
            // Held (hold_packet): handled again after resume_reading().
            replay_packet_ = false;
            pos -= frame.header.packet_size();
            --broker_.stats().messages_received;
        }
    }
    return pos;
}

bool Connection::flush() {
    if (held) {
        // Nothing may go out before the store batch is on disk. Stop asking
        // for EPOLLOUT meanwhile: level-triggered epoll would report the
        // writable socket on every turn and spin the reactor (starving the
        // store thread it waits for). The release marks it dirty again.
        if (want_write_ && state != State::closing) {
            want_write_ = false;
            broker_.reactor().modify(fd(), input_events(), this);
        }
        return true;
    }
    while (!output_.empty() || transport_->has_pending()) {
        if (transport_->has_pending()) {
            auto r = transport_->flush();
            if (r.status == net::IoStatus::would_block) break;
            if (r.status != net::IoStatus::ok) {
                broker_.connection_lost(*this);
                return false;
            }
            if (transport_->has_pending()) break;
            continue;
        }
        iovec iov[max_iov];
        int n = output_.fill_iov(iov, max_iov);
        if (n == 0) break;
        auto r = transport_->write(iov, n);
        if (r.status == net::IoStatus::would_block) break;
        if (r.status != net::IoStatus::ok) {
            broker_.connection_lost(*this);
            return false;
        }
        broker_.stats().bytes_sent += r.bytes;
        std::size_t offered = 0;
        for (int i = 0; i < n; ++i) offered += iov[i].iov_len;
        output_.consume(r.bytes);
        if (r.bytes < offered) break;  // the socket is full
    }
    update_events();
    return true;
}

void Connection::update_events(bool force) {
    if (state == State::closing) return;
    const bool want = !output_.empty() || transport_->has_pending() || transport_->wants_write();
    if (want == want_write_ && !force) return;
    want_write_ = want;
    broker_.reactor().modify(fd(), input_events() | (want ? EPOLLOUT : 0u), this);
}

// Waiting for credentials: only a hang-up is of interest (it ends the
// connection); the peer's further packets stay in the socket.
void Connection::pause_reading() {
    if (reading_paused_) return;
    reading_paused_ = true;
    update_events(true);
}

void Connection::resume_reading() {
    if (!reading_paused_ || state == State::closing) return;
    reading_paused_ = false;
    update_events(true);
    if (!pending_.empty()) {
        // The packets that came behind CONNECT, in their order. Level-
        // triggered epoll reports the socket again if more waits there.
        std::vector<std::byte> kept;
        kept.swap(pending_);
        const std::size_t consumed = process(kept.data(), kept.size());
        if (state == State::closing) return;
        pending_.assign(kept.begin() + static_cast<std::ptrdiff_t>(consumed), kept.end());
    }
    // A transport (TLS, WebSocket) may hold input epoll cannot report: one
    // read now, which costs a would-block at most.
    if (state != State::closing && !reading_paused_ && !reads_paused) on_readable();
}

void Connection::read_setup() { on_readable(); }

void Connection::queue_setup(bool queued) {
    if (queued == setup_queued || state == State::closing) return;
    setup_queued = queued;
    broker_.reactor().modify(fd(), input_events() | (want_write_ ? EPOLLOUT : 0u), this);
}

// Waiting for a store commit: no input is read (errors and hang-ups are
// still reported by epoll and read), so the connection's next packets wait
// behind the batch that holds its acknowledgements.
void Connection::pause_reads(bool pause) {
    if (pause == reads_paused || state == State::closing) return;
    reads_paused = pause;
    broker_.reactor().modify(fd(), input_events() | (want_write_ ? EPOLLOUT : 0u), this);
}

}  // namespace mqttools::broker
