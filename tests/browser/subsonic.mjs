// Conformance of Rondo's OpenSubsonic API, driven by the npm Subsonic
// client library `subsonic-api` (what third-party apps use), plus plain
// requests where the library has no way to say something (`p=`, XML,
// conflicting parameters). Asserts as it goes; prints a JSON report of the
// checks done as its last line.
//
//   node subsonic.mjs <gateway URL> <facts.json>
// with NODE_EXTRA_CA_CERTS naming the cluster's HTTPS CA.

import { readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import assert from "node:assert/strict";
import { SubsonicAPI } from "subsonic-api";

const [url, factsPath] = process.argv.slice(2);
const F = JSON.parse(readFileSync(factsPath, "utf8"));
const report = {};

const api = (auth, extra = {}) => new SubsonicAPI({ url, auth, ...extra });
const ok = (r, what) => {
  assert.equal(r.status, "ok", `${what}: ${JSON.stringify(r.error ?? r)}`);
  return r;
};
const failed = (r, code, what) => {
  assert.equal(r.status, "failed", `${what} should fail: ${JSON.stringify(r)}`);
  assert.equal(r.error?.code, code, `${what}: ${JSON.stringify(r.error)}`);
};
/** A plain request: the parsed envelope (JSON) or the text (XML). */
const plain = async (method, params, init = {}) => {
  const q = new URLSearchParams({ v: "1.16.1", c: "conformance", ...params });
  const res = await fetch(`${url}/rest/${method}?${q}`, init);
  const text = await res.text();
  return { res, text, json: params.f === "json" ? JSON.parse(text)["subsonic-response"] : null };
};

// ---- authentication ------------------------------------------------------
const token = api({ username: F.user, password: F.appPassword });
ok(await token.ping(), "token auth (t+s) with an app password");
const key = api({ apiKey: F.appPassword });
ok(await key.ping(), "apiKey");
const who = await key.customJSON("tokenInfo.view", {});
ok(who, "tokenInfo");
assert.equal(who.tokenInfo.username, F.user);
// The account's own password works as p (plain and enc:), not as a token:
// argon2 hashes cannot answer md5(password + salt).
const hex = Buffer.from(F.password, "utf8").toString("hex");
for (const p of [F.password, `enc:${hex}`]) {
  ok((await plain("ping.view", { u: F.user, p, f: "json" })).json, `p=${p.slice(0, 4)}…`);
}
ok((await plain("ping.view", { u: F.user, p: F.appPassword, f: "json" })).json, "p=<app password>");
// (Failed checks count against the per-name limit, as logins do: they are
// tried on the other account.)
failed((await plain("ping.view", { u: F.other, p: "wrong password", f: "json" })).json, 40, "wrong p");
ok(await api({ username: F.other, password: F.otherKey }).ping(), "bob's app password, made by an admin");
failed(await api({ username: F.other, password: "correct horse" }).ping(), 40, "token with the account password");
failed(await api({ username: F.other, password: "nope" }).ping(), 40, "wrong token");
failed(await api({ username: F.third, password: "correct horse" }).ping(), 41, "token for an account without app passwords");
failed(await api({ username: "nobody", password: "correct horse" }).ping(), 41, "token for an unknown name: the same answer");
failed(await api({ apiKey: "not-a-key" }).ping(), 44, "wrong apiKey");
failed(await api({ apiKey: F.revokedKey }).ping(), 44, "revoked apiKey");
failed(await key.customJSON("ping.view", { u: F.user }), 43, "apiKey with u");
failed((await plain("ping.view", { u: F.user, p: F.password, t: "0".repeat(32), s: "x", f: "json" })).json, 43, "p with t and s");
failed((await plain("ping.view", { f: "json" })).json, 10, "no credentials");
const basic = { headers: { Authorization: `Basic ${Buffer.from(`${F.user}:${F.password}`).toString("base64")}` } };
failed((await plain("ping.view", { f: "json" }, basic)).json, 42, "HTTP Basic alone");
ok((await plain("ping.view", { u: F.user, p: F.password, f: "json" }, basic)).json, "HTTP Basic beside p (as DSub sends)");
report.auth = true;

// ---- the envelope --------------------------------------------------------
const pong = await token.ping();
assert.equal(pong.version, "1.16.1");
assert.equal(pong.type, "rondo");
assert.equal(pong.openSubsonic, true);
assert.ok(pong.serverVersion, "serverVersion");
// getOpenSubsonicExtensions answers without credentials.
const ext = (await plain("getOpenSubsonicExtensions.view", { f: "json" })).json;
ok(ext, "extensions without credentials");
const names = ext.openSubsonicExtensions.map((e) => e.name).sort();
assert.deepEqual(names, ["apiKeyAuthentication", "formPost"]);
// XML by default, as text/xml.
const xml = await plain("ping.view", { u: F.user, p: F.password });
assert.match(xml.res.headers.get("content-type"), /^text\/xml/);
assert.match(xml.text, /<subsonic-response xmlns="http:\/\/subsonic.org\/restapi" status="ok" version="1.16.1" type="rondo"/);
const xmlError = await plain("getAlbum.view", { u: F.user, p: F.password });
assert.match(xmlError.text, /status="failed"[^]*<error code="10"/);
ok(await token.getLicense(), "getLicense");
report.envelope = true;

// ---- browsing: artists → artist → album → songs --------------------------
const [first, second, third] = F.songs;
const folders = ok(await token.getMusicFolders(), "getMusicFolders");
assert.equal(folders.musicFolders.musicFolder.length, 1);
const artists = ok(await token.getArtists(), "getArtists");
const allArtists = artists.artists.index.flatMap((i) => i.artist);
const harbour = allArtists.find((a) => a.name === first.artist);
assert.ok(harbour, `artist ${first.artist} in ${JSON.stringify(artists)}`);
assert.equal(harbour.id, first.artistId);
assert.equal(harbour.albumCount, 1);
assert.ok(artists.artists.index.some((i) => i.name === "H" && i.artist.some((a) => a.id === harbour.id)));
const artist = ok(await token.getArtist({ id: harbour.id }), "getArtist").artist;
assert.equal(artist.album.length, 1);
assert.equal(artist.album[0].name, first.album);
const album = ok(await token.getAlbum({ id: artist.album[0].id }), "getAlbum").album;
assert.equal(album.id, first.albumId);
assert.equal(album.songCount, 2);
assert.equal(album.artist, first.artist);
assert.ok(album.coverArt, "the album has a cover");
assert.deepEqual(album.song.map((s) => s.title).sort(), [second.title, first.title].sort());
const song = ok(await token.getSong({ id: first.id }), "getSong").song;
assert.equal(song.title, first.title);
assert.equal(song.isDir, false);
assert.equal(song.size, first.size);
assert.equal(song.albumId, first.albumId);
assert.equal(song.suffix, "wav");
assert.equal(song.year, 1999);
assert.equal(song.genre, "Test");
assert.equal(typeof song.duration, "number");
// Folder-style browsing, as tag-based servers emulate it.
const indexes = ok(await token.getIndexes(), "getIndexes").indexes;
assert.ok(indexes.index.flatMap((i) => i.artist).some((a) => a.id === harbour.id));
const dir = ok(await token.getMusicDirectory({ id: harbour.id }), "artist directory").directory;
assert.equal(dir.child[0].id, first.albumId);
assert.equal(dir.child[0].isDir, true);
const albumDir = ok(await token.getMusicDirectory({ id: first.albumId }), "album directory").directory;
assert.equal(albumDir.child.length, 2);
// Lists.
const byName = ok(await token.getAlbumList2({ type: "alphabeticalByName", size: 10 }), "alphabeticalByName");
assert.deepEqual(byName.albumList2.album.map((a) => a.name), [first.album, third.album]);
const newest = ok(await token.getAlbumList2({ type: "newest" }), "newest");
assert.equal(newest.albumList2.album[0].name, third.album, "the last upload first");
const byYear = ok(await token.getAlbumList2({ type: "byYear", fromYear: 1990, toYear: 2000 }), "byYear");
assert.equal(byYear.albumList2.album.length, 2);
const none = ok(await token.getAlbumList2({ type: "byYear", fromYear: 2001, toYear: 2010 }), "byYear, none");
assert.equal((none.albumList2.album ?? []).length, 0);
const byGenre = ok(await token.getAlbumList2({ type: "byGenre", genre: "Test" }), "byGenre");
assert.equal(byGenre.albumList2.album.length, 2);
const random = ok(await token.getRandomSongs({ size: 2 }), "getRandomSongs");
assert.equal(random.randomSongs.song.length, 2);
const genres = ok(await token.getGenres(), "getGenres").genres.genre;
assert.deepEqual(genres.map((g) => [g.value, g.songCount, g.albumCount]), [["Test", 3, 2]]);
const byGenreSongs = ok(await token.getSongsByGenre({ genre: "Test", count: 2 }), "getSongsByGenre");
assert.equal(byGenreSongs.songsByGenre.song.length, 2);
const user = ok(await token.getUser({ username: F.user }), "getUser").user;
assert.equal(user.username, F.user);
assert.equal(user.adminRole, false);
assert.equal(user.streamRole, true);
const scan = ok(await token.getScanStatus(), "getScanStatus").scanStatus;
assert.equal(scan.scanning, false);
assert.equal(scan.count, 3);
report.browse = true;

// ---- search3 (also through formPost) -------------------------------------
const post = api({ username: F.user, password: F.appPassword }, { post: true });
for (const client of [token, post]) {
  const found = ok(await client.search3({ query: "strasse" }), "search3").searchResult3;
  assert.deepEqual((found.song ?? []).map((s) => s.id), [third.id], "ß folds to ss");
  const tide = ok(await client.search3({ query: "tide", songCount: 1, songOffset: 1 }), "search3 paged").searchResult3;
  assert.equal(tide.song.length, 1);
}
// An empty query lists everything, paged (how apps sync a library).
const all = ok(await token.search3({ query: "", songCount: 500, albumCount: 500, artistCount: 500 }), "search3 all").searchResult3;
assert.equal(all.song.length, 3);
assert.equal(all.album.length, 2);
assert.equal(all.artist.length, 2);
const quoted = ok(await token.search3({ query: '""', songCount: 2, songOffset: 2 }), 'search3 ""').searchResult3;
assert.equal(quoted.song.length, 1);
report.search = true;

// ---- stream: a redirect to a node, where a range gives the exact bytes ---
const bytes = readFileSync(first.path);
let range = null;
const ranged = api(
  { username: F.user, password: F.appPassword },
  { fetch: (input, init = {}) => fetch(input, range ? { ...init, headers: { ...(init.headers ?? {}), Range: range } } : init) },
);
range = "bytes=100-1099";
const streamed = await ranged.stream({ id: first.id });
assert.equal(streamed.status, 206, "a range after the redirect");
assert.notEqual(new URL(streamed.url).port, new URL(url).port, "audio comes from a node, not the gateway");
const body = Buffer.from(await streamed.arrayBuffer());
assert.ok(body.equals(bytes.subarray(100, 1100)), "the exact bytes of the range");
range = null;
const whole = await token.download({ id: first.id });
assert.equal(whole.status, 200);
const got = Buffer.from(await whole.arrayBuffer());
assert.equal(createHash("sha256").update(got).digest("hex"), createHash("sha256").update(bytes).digest("hex"));
// The redirect itself: 302 to a signed URL, nothing cached.
const redirect = await plain("stream.view", { u: F.user, p: F.password, id: first.id }, { redirect: "manual" });
assert.equal(redirect.res.status, 302);
assert.match(redirect.res.headers.get("location"), /\/stream\/.*sig=/);
// A missing song is an error document (text/xml), not audio.
const missing = await plain("stream.view", { u: F.user, p: F.password, id: "00000000-0000-4000-8000-000000000000" });
assert.match(missing.res.headers.get("content-type"), /^text\/xml/);
assert.match(missing.text, /<error code="70"/);
report.stream = true;

// ---- cover art at a size -------------------------------------------------
/** Width and height of a JPEG (its first start-of-frame marker). */
const jpegSize = (b) => {
  assert.ok(b[0] === 0xff && b[1] === 0xd8, "a JPEG");
  let i = 2;
  while (i < b.length) {
    const marker = b[i + 1];
    const len = b.readUInt16BE(i + 2);
    if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
      return [b.readUInt16BE(i + 7), b.readUInt16BE(i + 5)];
    }
    i += 2 + len;
  }
  throw new Error("no frame in the JPEG");
};
for (const size of [64, 300]) {
  const cover = await token.getCoverArt({ id: album.coverArt, size });
  assert.equal(cover.status, 200);
  assert.match(cover.headers.get("content-type"), /^image\/jpeg/);
  assert.deepEqual(jpegSize(Buffer.from(await cover.arrayBuffer())), [size, size]);
}
// A song's coverArt names the same picture; an album id works too.
assert.equal(song.coverArt, album.coverArt);
const byAlbum = await token.getCoverArt({ id: first.albumId, size: 64 });
assert.equal(byAlbum.status, 200);
report.cover = true;

// ---- playlists -----------------------------------------------------------
const made = ok(await token.createPlaylist({ name: "Road trip", songId: [first.id, second.id] }), "createPlaylist").playlist;
assert.equal(made.name, "Road trip");
assert.deepEqual(made.entry.map((e) => e.id), [first.id, second.id]);
assert.equal(made.owner, F.user);
ok(await token.updatePlaylist({ playlistId: made.id, songIdToAdd: [third.id], songIndexToRemove: [0] }), "updatePlaylist");
const updated = ok(await token.getPlaylist({ id: made.id }), "getPlaylist").playlist;
assert.deepEqual(updated.entry.map((e) => e.id), [second.id, third.id]);
assert.equal(updated.songCount, 2);
const scratch = ok(await token.createPlaylist({ name: "Scratch" }), "createPlaylist, empty").playlist;
let lists = ok(await token.getPlaylists(), "getPlaylists").playlists.playlist;
assert.deepEqual(lists.map((p) => p.name).sort(), ["Road trip", "Scratch"]);
ok(await token.deletePlaylist({ id: scratch.id }), "deletePlaylist");
lists = ok(await token.getPlaylists(), "getPlaylists").playlists.playlist;
assert.deepEqual(lists.map((p) => p.id), [made.id]);
failed(await token.getPlaylist({ id: scratch.id }), 70, "a deleted playlist");
// Another account neither sees nor changes it.
const bob = await plain("getPlaylist.view", { u: F.other, p: "correct horse", id: made.id, f: "json" });
failed(bob.json, 70, "another account's playlist");
const bobDelete = await plain("deletePlaylist.view", { u: F.other, p: "correct horse", id: made.id, f: "json" });
failed(bobDelete.json, 70, "deleting another account's playlist");
// A bad index changes nothing.
failed(await token.updatePlaylist({ playlistId: made.id, name: "Renamed", songIndexToRemove: [7] }), 0, "index out of range");
assert.equal(ok(await token.getPlaylist({ id: made.id }), "unchanged").playlist.name, "Road trip");
report.playlists = true;
report.keptPlaylist = made.id;

// ---- stars, ratings, plays, the play queue --------------------------------
ok(await token.star({ id: [first.id], albumId: [first.albumId], artistId: [third.artistId] }), "star");
ok(await token.star({ id: [second.id] }), "star another");
ok(await token.unstar({ id: [second.id] }), "unstar");
const starred = ok(await token.getStarred2(), "getStarred2").starred2;
assert.deepEqual(starred.song.map((s) => s.id), [first.id]);
assert.deepEqual(starred.album.map((a) => a.id), [first.albumId]);
assert.deepEqual(starred.artist.map((a) => a.id), [third.artistId]);
assert.ok(starred.song[0].starred, "a starred song says when");
const starredAlbums = ok(await token.getAlbumList2({ type: "starred" }), "albumList2 starred");
assert.deepEqual(starredAlbums.albumList2.album.map((a) => a.id), [first.albumId]);
failed(await token.star({ id: ["00000000-0000-4000-8000-000000000000"] }), 70, "starring nothing known");
ok(await token.setRating({ id: third.id, rating: 4 }), "setRating");
ok(await token.setRating({ id: first.albumId, rating: 5 }), "rate an album");
assert.equal(ok(await token.getSong({ id: third.id }), "rated").song.userRating, 4);
const highest = ok(await token.getAlbumList2({ type: "highest" }), "albumList2 highest");
assert.deepEqual(highest.albumList2.album.map((a) => a.id), [first.albumId]);
failed(await token.setRating({ id: third.id, rating: 9 }), 0, "a rating above 5");
// Plays: two of the first song (one sent with a time), one of the third;
// "now playing" is not a play.
const t0 = Date.now() - 60_000;
ok(await token.scrobble({ id: first.id, time: t0 }), "scrobble with a time");
ok(await post.scrobble({ id: [first.id, third.id] }), "two plays in one scrobble, by form post");
ok(await token.scrobble({ id: second.id, submission: false }), "now playing");
assert.equal(ok(await token.getSong({ id: first.id }), "plays").song.playCount, 2);
assert.equal(ok(await token.getSong({ id: second.id }), "no play").song.playCount, 0);
const np = ok(await token.getNowPlaying(), "getNowPlaying").nowPlaying.entry;
assert.deepEqual(np.map((e) => [e.id, e.username]), [[second.id, F.user]]);
const frequent = ok(await token.getAlbumList2({ type: "frequent" }), "frequent").albumList2.album;
assert.deepEqual(frequent.map((a) => [a.id, a.playCount]), [[first.albumId, 2], [third.albumId, 1]]);
const recent = ok(await token.getAlbumList2({ type: "recent" }), "recent").albumList2.album;
assert.equal(recent.length, 2);
// The queue, saved by one client and restored by another.
failed(await token.savePlayQueue({ id: [first.id, third.id] }), 10, "a queue without current");
ok(await token.savePlayQueue({ id: [first.id, third.id], current: third.id, position: 42000 }), "savePlayQueue");
const restored = ok(await key.getPlayQueue(), "getPlayQueue").playQueue;
assert.deepEqual(restored.entry.map((e) => e.id), [first.id, third.id]);
assert.equal(restored.current, third.id);
assert.equal(restored.position, 42000);
assert.equal(restored.username, F.user);
ok(await token.savePlayQueue({}), "clearing the queue");
assert.equal(ok(await key.getPlayQueue(), "no queue").playQueue, undefined);
ok(await token.savePlayQueue({ id: [second.id], current: second.id }), "saving again");
report.listening = true;

// ---- errors --------------------------------------------------------------
failed(await token.getAlbum({ id: "not-an-id" }), 70, "a malformed id");
failed(await token.getAlbum({ id: "00000000-0000-4000-8000-000000000000" }), 70, "an unknown album");
failed(await token.customJSON("getAlbum.view", {}), 10, "a missing id");
failed(await token.customJSON("noSuchMethod.view", {}), 70, "an unknown method");
failed(await token.getAlbumList2({ type: "sideways" }), 0, "an unknown list type");
// An offset past the end is an empty page, however large.
const far = ok(await token.search3({ query: "tide", songOffset: 1e15, albumOffset: 1e15 }), "a huge offset").searchResult3;
assert.equal((far.song ?? []).length, 0);
failed(await token.getCoverArt({ id: album.coverArt, size: 100000 }).then((r) => r.json()).then((j) => j["subsonic-response"]), 0, "a huge size");
report.errors = true;

console.log(JSON.stringify(report));
