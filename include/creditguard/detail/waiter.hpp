// A parked reservation request: an intrusive FIFO node plus a slot in the deadline heap.
#pragma once

#include "creditguard/error.hpp"
#include "creditguard/reservation.hpp"
#include "creditguard/types.hpp"

#include <boost/system/error_code.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace creditguard::detail {

struct Waiter {
    static constexpr std::size_t not_in_heap = std::numeric_limits<std::size_t>::max();

    // Completes the operation with `outcome` (posted to the handler's executor) and frees the node. Called
    // exactly once, outside the guard's lock.
    using FinishFn = void (*)(Waiter*, Reservation&&);

    explicit Waiter(FinishFn fn) noexcept : finish(fn) {}

    Waiter* prev = nullptr;
    Waiter* next = nullptr;
    std::size_t heap_index = not_in_heap;
    TimePoint deadline{};
    TimePoint queued_at{};  // for the admission-wait histogram
    Credits cost = 0;
    // Policy reject: refused as soon as the cost is beyond what the best outcome of the jobs in flight
    // could leave (after one fresh balance read when the estimate was old); granted if room appears first.
    bool recheck_only = false;
    bool awaits_read = false;  // counted in the guard's reads_awaited_ until decide_after_round
    // async_wait_ready: waits for a pause to end, holds no credits, lives in its own list.
    bool ready_only = false;
    bool queued = false;
    errc outcome{};  // once decided: how it completes (errc{}: granted, or ready for a ready_only waiter)
    std::uint64_t decide_after_round = 0;
    std::uint64_t decide_after_read = 0;  // with the balance unknown, only a balance read decides
    FinishFn finish;

    boost::system::error_code outcome_code() const noexcept {
        return outcome == errc{} ? boost::system::error_code{} : make_error_code(outcome);
    }
};

/// FIFO of waiters (intrusive, O(1) unlink).
class WaiterList {
public:
    bool empty() const noexcept { return head_ == nullptr; }
    std::size_t size() const noexcept { return size_; }
    Waiter* front() const noexcept { return head_; }

    void push_back(Waiter* w) noexcept {
        w->prev = tail_;
        w->next = nullptr;
        (tail_ ? tail_->next : head_) = w;
        tail_ = w;
        ++size_;
    }

    void erase(Waiter* w) noexcept {
        (w->prev ? w->prev->next : head_) = w->next;
        (w->next ? w->next->prev : tail_) = w->prev;
        w->prev = w->next = nullptr;
        --size_;
    }

private:
    Waiter* head_ = nullptr;
    Waiter* tail_ = nullptr;
    std::size_t size_ = 0;
};

/// Waiters decided under the guard's lock, to be completed once it is released, in the order decided.
/// Intrusive (through `next`, the waiter having left every other list), so deciding never allocates.
class CompletionList {
public:
    bool empty() const noexcept { return head_ == nullptr; }

    void push_back(Waiter* w, errc outcome) noexcept {
        w->outcome = outcome;
        w->prev = w->next = nullptr;
        (tail_ ? tail_->next : head_) = w;
        tail_ = w;
    }

    /// Empties the list; the waiters taken stay chained through `next`.
    Waiter* take() noexcept {
        tail_ = nullptr;
        Waiter* head = head_;
        head_ = nullptr;
        return head;
    }

private:
    Waiter* head_ = nullptr;
    Waiter* tail_ = nullptr;
};

/// Min-heap of waiters by deadline; each waiter knows its index so removal is O(log n).
class DeadlineHeap {
public:
    bool empty() const noexcept { return heap_.empty(); }
    Waiter* top() const noexcept { return heap_.front(); }
    void reserve(std::size_t n) { heap_.reserve(n); }

    void push(Waiter* w) {
        w->heap_index = heap_.size();
        heap_.push_back(w);
        sift_up(w->heap_index);
    }

    void erase(Waiter* w) noexcept {
        const std::size_t index = w->heap_index;
        if (index == Waiter::not_in_heap) return;
        const std::size_t last = heap_.size() - 1;
        if (index != last) {
            place(index, heap_[last]);
            heap_.pop_back();
            sift_down(index);
            sift_up(index);
        } else {
            heap_.pop_back();
        }
        w->heap_index = Waiter::not_in_heap;
    }

private:
    void place(std::size_t index, Waiter* w) noexcept {
        heap_[index] = w;
        w->heap_index = index;
    }
    void sift_up(std::size_t index) noexcept {
        while (index > 0) {
            const std::size_t parent = (index - 1) / 2;
            if (!(heap_[index]->deadline < heap_[parent]->deadline)) break;
            Waiter* child = heap_[index];
            place(index, heap_[parent]);
            place(parent, child);
            index = parent;
        }
    }
    void sift_down(std::size_t index) noexcept {
        const std::size_t size = heap_.size();
        for (;;) {
            std::size_t smallest = index;
            const std::size_t left = 2 * index + 1;
            const std::size_t right = left + 1;
            if (left < size && heap_[left]->deadline < heap_[smallest]->deadline) smallest = left;
            if (right < size && heap_[right]->deadline < heap_[smallest]->deadline) smallest = right;
            if (smallest == index) return;
            Waiter* w = heap_[index];
            place(index, heap_[smallest]);
            place(smallest, w);
            index = smallest;
        }
    }

    std::vector<Waiter*> heap_;
};

}  // namespace creditguard::detail
