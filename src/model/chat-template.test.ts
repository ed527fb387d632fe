import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ChatTemplate, DEFAULT_CHAT_TEMPLATE } from './chat-template.js';

const FIXTURE = fileURLToPath(new URL('../../test/fixtures/hf-tiny-llama/', import.meta.url));
const reference = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'reference.json'), 'utf8')) as {
  chat_template_render: { messages: { role: string; content: string }[]; add_generation_prompt: boolean; text: string };
};
const dirs: string[] = [];
after(() => dirs.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));

function modelDir(files: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'deltaserve-chat-'));
  dirs.push(dir);
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
  return dir;
}

test('renders the reference conversation exactly as transformers does', () => {
  const { messages, add_generation_prompt, text } = reference.chat_template_render;
  const chat = ChatTemplate.fromDirectory(path.join(FIXTURE, 'base'));
  assert.ok(chat);
  assert.equal(chat.render(messages, { addGenerationPrompt: add_generation_prompt }), text);
});

test('DEFAULT_CHAT_TEMPLATE is the fixture template', () => {
  assert.equal(DEFAULT_CHAT_TEMPLATE, fs.readFileSync(path.join(FIXTURE, 'base', 'chat_template.jinja'), 'utf8'));
  const chat = new ChatTemplate(DEFAULT_CHAT_TEMPLATE);
  assert.equal(chat.render([{ role: 'user', content: 'hi' }]), '<|im_start|>user\nhi<|im_end|>\n');
});

test('falls back to tokenizer_config chat_template, string or named list', () => {
  const asString = modelDir({ 'tokenizer_config.json': JSON.stringify({ chat_template: '{{ messages[0].content }}!' }) });
  assert.equal(ChatTemplate.fromDirectory(asString)?.render([{ role: 'user', content: 'x' }]), 'x!');
  const named = [
    { name: 'tool_use', template: 'tools' },
    { name: 'default', template: 'plain {{ messages | length }}' },
  ];
  const asList = modelDir({ 'tokenizer_config.json': JSON.stringify({ chat_template: named }) });
  assert.equal(ChatTemplate.fromDirectory(asList)?.render([{ role: 'user', content: 'x' }]), 'plain 1');
});

test('chat_template.jinja wins over tokenizer_config', () => {
  const dir = modelDir({
    'chat_template.jinja': 'file',
    'tokenizer_config.json': JSON.stringify({ chat_template: 'config' }),
  });
  assert.equal(ChatTemplate.fromDirectory(dir)?.render([]), 'file');
});

test('no template gives null', () => {
  assert.equal(ChatTemplate.fromDirectory(modelDir({})), null);
  assert.equal(ChatTemplate.fromDirectory(modelDir({ 'tokenizer_config.json': '{"bos_token": "<s>"}' })), null);
});

test('passes bos/eos strings (plain or {content}) and extra variables', () => {
  const config = { bos_token: { content: '<s>' }, eos_token: '</s>', chat_template: '{{ bos_token }}{{ who }}{{ eos_token }}' };
  const chat = ChatTemplate.fromDirectory(modelDir({ 'tokenizer_config.json': JSON.stringify(config) }));
  assert.equal(chat?.render([], { extra: { who: 'me' } }), '<s>me</s>');
  assert.equal(chat?.render([], { extra: { who: 'me', eos_token: '' } }), '<s>me');
});

test('template errors throw with the message', () => {
  const raising = new ChatTemplate("{{ raise_exception('roles must alternate') }}");
  assert.throws(() => raising.render([]), /roles must alternate/);
  assert.throws(() => new ChatTemplate('{% for m in messages %}'), /chat template/);
});
