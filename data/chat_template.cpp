#include "data/chat_template.h"

#include "common/error.h"
#include "data/utf8.h"

namespace ll {

namespace {

// Qwen2.5-Instruct's template inserts this system message when the conversation has none.
constexpr const char* kQwenDefaultSystem =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

int required_id(const Tokenizer& tok, std::string_view piece, ChatTemplate t) {
  const auto id = tok.token_id(piece);
  LL_CHECK(id.has_value(),
           "{}: --chat-template {} needs the token {}, which this tokenizer does not have; pick "
           "the family's format (llama3 for <|start_header_id|>, chatml for <|im_start|>, "
           "llama2 otherwise)",
           tok.path(), chat_template_name(t), piece);
  return *id;
}

// Meta-Llama-3-Instruct: bos_token + per message "<|start_header_id|>" + role +
// "<|end_header_id|>\n\n" + content|trim + "<|eot_id|>".
void llama3_message(std::string& out, const char* role, std::string_view content) {
  out += "<|start_header_id|>";
  out += role;
  out += "<|end_header_id|>\n\n";
  out += utf8::python_strip(content);
  out += "<|eot_id|>";
}

std::string llama3_prompt(const ChatTurns& c, const Tokenizer& tok) {
  // bos_token is the tokenizer's BOS text; a tokenizer without one renders "".
  std::string out = tok.bos_id() >= 0 ? tok.decode({tok.bos_id()}) : "";
  if (!c.system.empty()) llama3_message(out, "system", c.system);
  llama3_message(out, "user", c.user);
  return out;
}

void chatml_message(std::string& out, const char* role, std::string_view content) {
  out += "<|im_start|>";
  out += role;
  out += '\n';
  out += content;
  out += "<|im_end|>\n";
}

std::string chatml_prompt(const ChatTurns& c) {
  std::string out;
  chatml_message(out, "system", c.system.empty() ? kQwenDefaultSystem : c.system);
  chatml_message(out, "user", c.user);
  return out;
}

}  // namespace

const char* chat_template_name(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::Llama2:
      return "llama2";
    case ChatTemplate::Llama3:
      return "llama3";
    case ChatTemplate::ChatMl:
      return "chatml";
  }
  return "?";
}

ChatTemplate default_chat_template(const Tokenizer& tok) {
  if (tok.token_id("<|start_header_id|>")) return ChatTemplate::Llama3;
  if (tok.token_id("<|im_start|>")) return ChatTemplate::ChatMl;
  return ChatTemplate::Llama2;
}

ChatTemplate chat_template_for(std::string_view name, const Tokenizer& tok) {
  if (name.empty() || name == "auto") return default_chat_template(tok);
  if (name == "llama2") return ChatTemplate::Llama2;
  if (name == "llama3") return ChatTemplate::Llama3;
  if (name == "chatml") return ChatTemplate::ChatMl;
  fail("--chat-template must be auto, llama2, llama3 or chatml (got \"{}\")", name);
}

void check_chat_template(ChatTemplate t, const Tokenizer& tok) {
  switch (t) {
    case ChatTemplate::Llama2:
      LL_CHECK(tok.bos_id() >= 0 && tok.eos_id() >= 0,
               "{}: --chat-template llama2 needs BOS and EOS (bos id {}, eos id {}): its "
               "examples are BOS + prompt + answer + EOS",
               tok.path(), tok.bos_id(), tok.eos_id());
      break;
    case ChatTemplate::Llama3:
      for (const char* p : {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"})
        required_id(tok, p, t);
      break;
    case ChatTemplate::ChatMl:
      for (const char* p : {"<|im_start|>", "<|im_end|>"}) required_id(tok, p, t);
      break;
  }
}

std::string render_chat_prompt(ChatTemplate t, const ChatTurns& c, const Tokenizer& tok) {
  switch (t) {
    case ChatTemplate::Llama3:
      return llama3_prompt(c, tok) + "<|start_header_id|>assistant<|end_header_id|>\n\n";
    case ChatTemplate::ChatMl:
      return chatml_prompt(c) + "<|im_start|>assistant\n";
    case ChatTemplate::Llama2:
      break;
  }
  fail("render_chat_prompt: the llama2 format is LongLoRA's prompt (sft_prompt)");
}

std::string render_chat(ChatTemplate t, const ChatTurns& c, const Tokenizer& tok) {
  std::string out;
  switch (t) {
    case ChatTemplate::Llama3:
      out = llama3_prompt(c, tok);
      llama3_message(out, "assistant", c.assistant);
      return out;
    case ChatTemplate::ChatMl:
      out = chatml_prompt(c);
      chatml_message(out, "assistant", c.assistant);
      return out;
    case ChatTemplate::Llama2:
      break;
  }
  fail("render_chat: the llama2 format is LongLoRA's prompt (sft_prompt)");
}

int end_of_turn_id(ChatTemplate t, const Tokenizer& tok) {
  switch (t) {
    case ChatTemplate::Llama3:
      return required_id(tok, "<|eot_id|>", t);
    case ChatTemplate::ChatMl:
      return required_id(tok, "<|im_end|>", t);
    case ChatTemplate::Llama2:
      break;
  }
  return tok.eos_id();
}

}  // namespace ll
