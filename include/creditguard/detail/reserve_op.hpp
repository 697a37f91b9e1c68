// The completion-token machinery of CreditGuard::async_reserve: the initiation, the parked operation
// and its cancellation handler. Internal.
#pragma once

#include "creditguard/detail/guard_core.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>

#include <memory>
#include <type_traits>
#include <utility>

namespace creditguard::detail {

struct ReserveCancelHandler {
    std::weak_ptr<GuardCore> core;
    Waiter* waiter;
    void operator()(boost::asio::cancellation_type type) const {
        using boost::asio::cancellation_type;
        if ((type & (cancellation_type::terminal | cancellation_type::partial | cancellation_type::total)) ==
            cancellation_type::none)
            return;
        if (auto locked = core.lock()) locked->cancel(waiter);
    }
};

// WithReservation: the handler takes (error_code, Reservation); otherwise (error_code) (async_wait_ready).
template <typename Handler, bool WithReservation = true>
struct ReserveWaitOp final : Waiter {
    using handler_executor = boost::asio::associated_executor_t<Handler, boost::asio::any_io_executor>;
    // The handler's executor with outstanding work tracked while the waiter is parked: one executor, not the
    // two an executor_work_guard holds (120 bytes for any_io_executor).
    using tracked_executor = std::decay_t<decltype(boost::asio::prefer(
        std::declval<const handler_executor&>(), boost::asio::execution::outstanding_work.tracked))>;

    ReserveWaitOp(Handler&& h, const boost::asio::any_io_executor& guard_executor)
        : Waiter(&finish_op),
          handler(std::move(h)),
          executor(boost::asio::prefer(boost::asio::get_associated_executor(handler, guard_executor),
                                       boost::asio::execution::outstanding_work.tracked)),
          slot(boost::asio::get_associated_cancellation_slot(handler)) {}

    // The handler may be moved out by now; the slot was taken from it at construction.
    ~ReserveWaitOp() {
        if (slot.is_connected()) slot.clear();
    }

    // Posts the completion; the node is freed on the handler's executor, where the slot is cleared. The
    // posted function carries the node and the reservation only (the error code is the node's outcome):
    // with 100k waiters woken at once, every byte of it is allocated 100k times.
    static void finish_op(Waiter* base, Reservation&& reservation) {
        std::unique_ptr<ReserveWaitOp> op(static_cast<ReserveWaitOp*>(base));
        tracked_executor target = op->executor;
        boost::asio::post(std::move(target), [op = std::move(op), r = std::move(reservation)]() mutable {
            Handler h = std::move(op->handler);
            const boost::system::error_code ec = op->outcome_code();
            op.reset();
            if constexpr (WithReservation) {
                std::move(h)(ec, std::move(r));
            } else {
                std::move(h)(ec);
            }
        });
    }

    Handler handler;
    tracked_executor executor;
    boost::asio::cancellation_slot slot;
};

struct ReserveInitiation {
    GuardCore* core;

    template <typename Handler>
    void operator()(Handler&& handler, Credits cost, ReserveOptions options) const {
        using Decayed = std::decay_t<Handler>;
        Reservation granted;
        errc why{};
        switch (core->try_admit(cost, granted, why)) {
        case GuardCore::Admission::granted: return complete_now(std::forward<Handler>(handler), {}, std::move(granted));
        case GuardCore::Admission::failed:
            return complete_now(std::forward<Handler>(handler), make_error_code(why), Reservation{});
        case GuardCore::Admission::must_wait: break;
        }
        auto op = std::make_unique<ReserveWaitOp<Decayed>>(std::forward<Handler>(handler), core->executor());
        if (op->slot.is_connected())
            op->slot.template emplace<ReserveCancelHandler>(ReserveCancelHandler{core->weak_from_this(), op.get()});
        core->park(op.release(), cost, options);
    }

    // Never complete inline inside initiation (use_awaitable would recurse): post it.
    template <typename Handler>
    void complete_now(Handler&& handler, boost::system::error_code ec, Reservation&& r) const {
        auto executor = boost::asio::get_associated_executor(handler, core->executor());
        boost::asio::post(executor, boost::asio::append(std::forward<Handler>(handler), ec, std::move(r)));
    }
};

struct ReadyInitiation {
    GuardCore* core;

    template <typename Handler>
    void operator()(Handler&& handler) const {
        using Decayed = std::decay_t<Handler>;
        auto op = std::make_unique<ReserveWaitOp<Decayed, false>>(std::forward<Handler>(handler), core->executor());
        if (op->slot.is_connected())
            op->slot.template emplace<ReserveCancelHandler>(ReserveCancelHandler{core->weak_from_this(), op.get()});
        core->park_ready(op.release());
    }
};

}  // namespace creditguard::detail
