#include "data/bpe.h"

#include <queue>

#include "common/error.h"
#include "data/utf8.h"

namespace ll {

Bpe::Bpe(const hf::BpeModel& m, const std::string& name)
    : prefix_(m.continuing_subword_prefix),
      suffix_(m.end_of_word_suffix),
      fuse_unk_(m.fuse_unk),
      byte_fallback_(m.byte_fallback),
      ignore_merges_(m.ignore_merges) {
  int32_t max_id = 0;
  for (const auto& [piece, id] : m.vocab) max_id = std::max(max_id, id);
  pieces_.resize(size_t(max_id) + 1);
  has_piece_.resize(size_t(max_id) + 1);
  vocab_.reserve(m.vocab.size());
  for (const auto& [piece, id] : m.vocab) {
    vocab_.emplace(piece, id);
    pieces_[size_t(id)] = piece;
    has_piece_[size_t(id)] = true;
  }
  if (m.unk_token) unk_id_ = vocab_.at(*m.unk_token);
  merges_.reserve(m.merges.size());
  for (size_t rank = 0; rank < m.merges.size(); ++rank) {
    const auto& [a, b] = m.merges[rank];
    // With a continuing-subword prefix the right piece carries it and the merged one does not.
    const std::string_view b_body = !prefix_.empty() && std::string_view(b).starts_with(prefix_)
                                        ? std::string_view(b).substr(prefix_.size())
                                        : std::string_view(b);
    const std::string merged = a + std::string(b_body);
    const auto it = vocab_.find(merged);
    LL_CHECK(it != vocab_.end(),
             "{}: model.merges[{}]: \"{} {}\" makes \"{}\", which is not in model.vocab", name,
             rank, a, b, merged);
    // A repeated pair keeps its last rank, as the library's map does.
    merges_[pair_key(vocab_.at(a), vocab_.at(b))] = Merge{int32_t(rank), it->second};
  }
  if (byte_fallback_) {
    byte_ids_.resize(256);
    for (int b = 0; b < 256; ++b) byte_ids_[size_t(b)] = id_of(fmt::format("<0x{:02X}>", b));
  }
}

std::optional<int32_t> Bpe::id_of(std::string_view piece) const {
  const auto it = vocab_.find(piece);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* Bpe::piece_of(int32_t id) const {
  if (id < 0 || size_t(id) >= pieces_.size() || !has_piece_[size_t(id)]) return nullptr;
  return &pieces_[size_t(id)];
}

const Bpe::Merge* Bpe::find_merge(int32_t a, int32_t b) const {
  const auto it = merges_.find(pair_key(a, b));
  return it == merges_.end() ? nullptr : &it->second;
}

void Bpe::encode_word(std::string_view word, std::vector<int>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {  // a word that is a piece is that piece, whatever the merges say
    if (const auto id = id_of(word)) {
      out.push_back(*id);
      return;
    }
  }
  // The library's Word: symbols in a linked list; len 0 marks one merged away.
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    int32_t len;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  const auto add = [&](int32_t id, size_t byte_len) {
    const int32_t n = int32_t(symbols.size());
    if (n > 0) symbols.back().next = n;
    symbols.push_back(Symbol{id, n - 1, -1, int32_t(byte_len)});
  };
  int32_t unk = -1;    // a pending unknown token's id (-1: none)...
  size_t unk_len = 0;  // ...and the bytes it covers
  std::string piece;
  for (size_t i = 0; i < word.size();) {
    size_t n = utf8::valid_sequence_length(word, i);
    if (n == 0) n = 1;  // cannot happen on valid text; keeps the loop moving
    const bool first = i == 0, last = i + n == word.size();
    piece.assign(word.substr(i, n));
    if (!first && !prefix_.empty()) piece = prefix_ + piece;
    if (last && !suffix_.empty()) piece += suffix_;
    if (const auto id = id_of(piece)) {
      if (unk >= 0) {
        add(unk, unk_len);
        unk = -1;
      }
      add(*id, n);
    } else {
      bool done = false;
      if (byte_fallback_) {
        bool all = true;
        for (unsigned char c : piece) all = all && byte_ids_[c].has_value();
        if (all) {
          for (unsigned char c : piece) add(*byte_ids_[c], 1);
          done = true;
        }
      }
      if (!done && unk_id_) {
        if (unk >= 0 && fuse_unk_) {
          unk_len += n;
        } else {
          if (unk >= 0) add(unk, unk_len);
          unk = *unk_id_;
          unk_len = n;
        }
      }
      // No unknown token and no byte piece: the library drops the character; so do we.
    }
    i += n;
  }
  if (unk >= 0) add(unk, unk_len);

  // Merge lowest rank first; among equal ranks the leftmost (the library's heap order).
  struct Candidate {
    int32_t rank, pos, new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const Merge* m = find_merge(symbols[i].id, symbols[i + 1].id))
      queue.push(Candidate{m->rank, int32_t(i), m->new_id});
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& cur = symbols[size_t(top.pos)];
    if (cur.len == 0 || cur.next == -1) continue;
    const int32_t right_pos = cur.next;
    const Symbol right = symbols[size_t(right_pos)];
    const Merge* m = find_merge(cur.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;  // a stale entry
    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    symbols[size_t(right_pos)].len = 0;  // merged away
    if (right.next != -1) symbols[size_t(right.next)].prev = top.pos;
    if (cur.prev >= 0) {
      if (const Merge* pm = find_merge(symbols[size_t(cur.prev)].id, cur.id))
        queue.push(Candidate{pm->rank, cur.prev, pm->new_id});
    }
    if (cur.next >= 0) {
      if (const Merge* nm = find_merge(cur.id, symbols[size_t(cur.next)].id))
        queue.push(Candidate{nm->rank, top.pos, nm->new_id});
    }
  }
  for (const Symbol& s : symbols) {
    if (s.len > 0) out.push_back(s.id);
  }
}

}  // namespace ll
