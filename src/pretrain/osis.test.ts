import { test } from 'node:test';
import assert from 'node:assert/strict';
import { osisToText } from './osis.js';

test('keeps the words of <w> elements and drops the attributes', () => {
  assert.equal(osisToText('<w lemma="strong:H7225">In</w> <w lemma="strong:H0430">the</w> beginning.'), 'In the beginning.');
});

test('footnotes and headings go with their content; a footnote leaves a space only before a word', () => {
  // As in the WEB's Genesis 1:1, where the space after "God" is inside the footnote.
  assert.equal(osisToText('<w>God</w><note placement="foot"><reference>1:1 </reference>Elohim</note><w>created</w>.'), 'God created.');
  assert.equal(osisToText('the earth<note>a note</note>, and'), 'the earth, and');
  assert.equal(osisToText('said, <note>n</note>“Behold'), 'said, “Behold');
  assert.equal(osisToText('<title type="psalm" canonical="true">A Psalm by David.</title> Yahweh is my shepherd'), 'Yahweh is my shepherd');
  assert.equal(osisToText('a<note n="x"/>b'), 'a b');
});

test('block elements separate words; entities decode', () => {
  assert.equal(osisToText('<l level="1">The earth is Yahweh’s,</l><l level="2">with its fullness;</l>'), 'The earth is Yahweh’s, with its fullness;');
  assert.equal(osisToText('bread &amp; wine &lt;ok&gt; &#8220;q&#x201D; &quot;'), 'bread & wine <ok> “q” "');
  assert.equal(osisToText('<chapter eID="Gen.1"/><div eID="x" type="x-p"/>'), '');
});

test('an unclosed footnote or heading is an error, not a silently truncated verse', () => {
  assert.throws(() => osisToText('word <note>never closed'), /unclosed <note>/);
});
