#include "engine/parallel/context_halo.h"

#include <algorithm>
#include <vector>

#include "common/error.h"

namespace ll::dist {

ContextHalo::ContextHalo(Communicator& comm, const ContextExchange& exchange, int part,
                         int first_rank, int64_t kv_heads, int64_t head_dim)
    : comm_(comm),
      exchange_(exchange),
      part_index_(part),
      first_rank_(first_rank),
      kv_heads_(kv_heads),
      head_dim_(head_dim) {
  const int parts = int(exchange.parts.size());
  LL_CHECK(part >= 0 && part < parts && first_rank >= 0 && first_rank + parts <= comm.world_size(),
           "context parallelism: part {} of {} from rank {} in a world of {}", part, parts,
           first_rank, comm.world_size());
  part_ = exchange.parts[size_t(part)];
  key_begin_ = part_.begin;
  for (const KeyTransfer& t : exchange.transfers) {
    if (t.to == part) key_begin_ = std::min(key_begin_, t.begin);
    LL_CHECK(t.kv_head_end <= kv_heads,
             "context parallelism: a transfer of kv heads up to {} of {}", t.kv_head_end, kv_heads);
  }
}

void ContextHalo::pack(const KeyTransfer& t, std::span<const float> k, std::span<const float> v,
                       int64_t origin, std::span<float> message) const {
  const int64_t heads = t.kv_heads(), hd = head_dim_, half = row_values(t);
  for (int64_t pos = t.begin; pos < t.end; ++pos) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t src = ((pos - origin) * kv_heads_ + t.kv_head_begin + h) * hd;
      const int64_t dst = ((pos - t.begin) * heads + h) * hd;
      std::copy_n(k.begin() + src, hd, message.begin() + dst);
      std::copy_n(v.begin() + src, hd, message.begin() + half + dst);
    }
  }
}

void ContextHalo::unpack(const KeyTransfer& t, std::span<const float> message, std::span<float> k,
                         std::span<float> v, int64_t origin, bool add) const {
  const int64_t heads = t.kv_heads(), hd = head_dim_, half = row_values(t);
  for (int64_t pos = t.begin; pos < t.end; ++pos) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t dst = ((pos - origin) * kv_heads_ + t.kv_head_begin + h) * hd;
      const int64_t src = ((pos - t.begin) * heads + h) * hd;
      for (int64_t d = 0; d < hd; ++d) {
        const float kd = message[size_t(src + d)], vd = message[size_t(half + src + d)];
        k[size_t(dst + d)] = add ? k[size_t(dst + d)] + kd : kd;
        v[size_t(dst + d)] = add ? v[size_t(dst + d)] + vd : vd;
      }
    }
  }
}

void ContextHalo::exchange_transfers(bool gradients, std::span<const float> k,
                                     std::span<const float> v, int64_t origin,
                                     std::span<float> k_out, std::span<float> v_out,
                                     int64_t origin_out, const std::string& context) {
  // Forward the owner sends each transfer to its user; for gradients the user sends it back.
  const auto sender = [&](const KeyTransfer& t) { return gradients ? t.to : t.from; };
  const auto receiver = [&](const KeyTransfer& t) { return gradients ? t.from : t.to; };
  // Messages in the plan's transfer order on both sides: the pairing the exchange keeps.
  std::vector<std::vector<float>> out, in;
  std::vector<const KeyTransfer*> incoming;
  std::vector<PeerSend> sends;
  std::vector<PeerRecv> recvs;
  for (const KeyTransfer& t : exchange_.transfers) {
    if (sender(t) == part_index_) {
      out.emplace_back(size_t(2 * row_values(t)));
      pack(t, k, v, origin, out.back());
    }
    if (receiver(t) == part_index_) {
      in.emplace_back(size_t(2 * row_values(t)));
      incoming.push_back(&t);
    }
  }
  size_t o = 0, i = 0;
  for (const KeyTransfer& t : exchange_.transfers) {
    if (sender(t) == part_index_) {
      sends.push_back({first_rank_ + receiver(t), out[o++]});
      values_sent_ += 2 * row_values(t);
    }
    if (receiver(t) == part_index_) {
      recvs.push_back({first_rank_ + sender(t), in[i++]});
      values_received_ += 2 * row_values(t);
    }
  }
  comm_.exchange(sends, recvs, context);
  for (size_t m = 0; m < incoming.size(); ++m)
    unpack(*incoming[m], in[m], k_out, v_out, origin_out, gradients);
}

void ContextHalo::gather(std::span<const float> k, std::span<const float> v, std::span<float> kbuf,
                         std::span<float> vbuf, const std::string& context) {
  const int64_t row = kv_heads_ * head_dim_, own = part_.size() * row;
  LL_CHECK(int64_t(k.size()) == own && int64_t(v.size()) == own &&
               int64_t(kbuf.size()) == key_rows() * row && int64_t(vbuf.size()) == key_rows() * row,
           "context parallelism: gather of {} key values into {} (part of {} tokens, {} key rows)",
           k.size(), kbuf.size(), part_.size(), key_rows());
  // Rows before the part's own: zero unless a transfer brings them.
  const int64_t at = (part_.begin - key_begin_) * row;
  std::fill(kbuf.begin(), kbuf.begin() + at, 0.0f);
  std::fill(vbuf.begin(), vbuf.begin() + at, 0.0f);
  std::copy(k.begin(), k.end(), kbuf.begin() + at);
  std::copy(v.begin(), v.end(), vbuf.begin() + at);
  exchange_transfers(false, k, v, part_.begin, kbuf, vbuf, key_begin_, context);
}

void ContextHalo::return_gradients(std::span<const float> dkbuf, std::span<const float> dvbuf,
                                   std::span<float> dk, std::span<float> dv,
                                   const std::string& context) {
  const int64_t row = kv_heads_ * head_dim_, own = part_.size() * row;
  LL_CHECK(int64_t(dk.size()) == own && int64_t(dv.size()) == own &&
               int64_t(dkbuf.size()) == key_rows() * row &&
               int64_t(dvbuf.size()) == key_rows() * row,
           "context parallelism: {} key gradient values into {} (part of {} tokens, {} key rows)",
           dkbuf.size(), dk.size(), part_.size(), key_rows());
  const int64_t at = (part_.begin - key_begin_) * row;
  std::copy_n(dkbuf.begin() + at, own, dk.begin());
  std::copy_n(dvbuf.begin() + at, own, dv.begin());
  // The reverse of gather: users send the gradients of what they received to the owners; the
  // later parts' gradients add in part order (transfers are ordered by receiving part).
  exchange_transfers(true, dkbuf, dvbuf, key_begin_, dk, dv, part_.begin, context);
}

}  // namespace ll::dist
