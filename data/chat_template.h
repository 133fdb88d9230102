#pragma once
// SFT chat formats: how an instruction record becomes the text a family's chat model is
// trained on, exactly as transformers' apply_chat_template renders it with the family's
// template (docs/formats/sft-records.md):
//   llama2  LongLoRA's own prompt ("[INST]...[/INST]", the Llama-2 system prompt with input);
//   llama3  Meta-Llama-3-Instruct's template (header tokens, contents trimmed, <|eot_id|>);
//   chatml  Qwen2.5-Instruct's template (<|im_start|>/<|im_end|>, Qwen's default system).
#include <string>
#include <string_view>

#include "data/tokenizer.h"

namespace ll {

enum class ChatTemplate { Llama2, Llama3, ChatMl };

// "llama2", "llama3", "chatml"; "auto" (or "") picks the family's from the tokenizer.
ChatTemplate chat_template_for(std::string_view name, const Tokenizer& tokenizer);
const char* chat_template_name(ChatTemplate t);
// llama3 for a tokenizer with <|start_header_id|>, chatml for one with <|im_start|>, else
// llama2.
ChatTemplate default_chat_template(const Tokenizer& tokenizer);
// Throws ll::Error naming the tokens the template needs and the tokenizer lacks.
void check_chat_template(ChatTemplate t, const Tokenizer& tokenizer);

// One conversation of the llama3/chatml formats: optional system, one user turn, the answer.
struct ChatTurns {
  std::string system;  // "" when absent
  std::string user;
  std::string assistant;
};

// The template's text for the prompt alone, with the generation prompt (what the model sees
// before its answer), and for the whole conversation.
std::string render_chat_prompt(ChatTemplate t, const ChatTurns& turns, const Tokenizer& tokenizer);
std::string render_chat(ChatTemplate t, const ChatTurns& turns, const Tokenizer& tokenizer);

// The token that ends the assistant's turn: <|eot_id|> (llama3), <|im_end|> (chatml), EOS
// (llama2).
int end_of_turn_id(ChatTemplate t, const Tokenizer& tokenizer);

}  // namespace ll
