// The rule set that sorts a tab when the model cannot answer in time: the JavaScript port of
// py_engine/tabs/rules.py, which holds the matching rules step by step (this file follows them
// in the same order) and rules_conformance.json, the answers every port must give.
//
//   const rules = parseRules(await (await fetch("model/rules.json")).json(),
//                            await (await fetch("model/listed_domains.json")).json(),
//                            await (await fetch("model/word_weights.json")).json());
//   categorise(rules, url, title)      // a category id ("dev", ...) or null
//   categorise(rules, url, title, { guess: true })  // and the word weights' guess (step 7)
//
// Pure functions over data: no chrome.* here, so the same module runs in the service worker,
// extension pages and Node (the tests).

const LOCAL_DEV = "local dev server";
const LOCAL_NETWORK = "local network";
const LOOPBACK_NAMES = new Set(["localhost", "0.0.0.0", "::1"]);
const DEV_SUFFIXES = [".localhost", ".test"];
const LAN_SUFFIXES = [".local", ".internal", ".lan", ".home.arpa"];
const DEFAULT_PORTS = { ftp: 21, http: 80, https: 443, ws: 80, wss: 443 };
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const WORD = /[\p{L}\p{N}]+/gu;
const ESCAPES = /(?:%[0-9A-Fa-f]{2})+/g;

export class RulesError extends Error {}

// A checked rule set from rules.json's object, the listed-domains file's object and the
// word-weights file's object (null: none): {localDev, domains: [[domain, path, weak,
// category]], keywords: {category: [[word, ...]]}, listed: Map(domain -> category), weights:
// {categories, bias, features: Map(feature -> [number per category])} | null}.
export function parseRules(data, listed = null, weights = null) {
  if (!data || typeof data !== "object" || data.version !== 1) {
    throw new RulesError('rules: expected an object with "version": 1');
  }
  if (typeof data.local_dev !== "string" || !data.local_dev) {
    throw new RulesError('rules: "local_dev" must name a category id');
  }
  const domains = (data.domains || []).map((rule, k) => {
    if (!rule || typeof rule.domain !== "string" || typeof rule.category !== "string") {
      throw new RulesError(`rules: domain rule ${k + 1} needs a domain and a category`);
    }
    return [rule.domain, rule.path || "", rule.weak === true, rule.category];
  });
  const keywords = {};
  for (const [category, list] of Object.entries(data.keywords || {})) {
    if (!Array.isArray(list)) throw new RulesError(`rules: keywords of ${category} must be a list`);
    const seen = new Set();
    keywords[category] = list.filter((k) => !seen.has(k) && seen.add(k)).map((k) => k.split(" "));
  }
  return { localDev: data.local_dev, domains, keywords, listed: listedDomains(listed), weights: wordWeights(weights) };
}

function wordWeights(data) {
  if (data === null) return null;
  const whole = (row, n) => Array.isArray(row) && row.length === n && row.every(Number.isInteger);
  if (!data || typeof data !== "object" || data.version !== 1 || !Array.isArray(data.categories) || !data.categories.length ||
      !whole(data.bias, data.categories.length) || !data.features || typeof data.features !== "object") {
    throw new RulesError('word weights: expected an object with "version": 1, "categories", "bias" and "features"');
  }
  const ids = data.categories;
  if (!ids.every((c) => typeof c === "string" && c) || new Set(ids).size !== ids.length) {
    throw new RulesError('word weights: "categories" must be a list of distinct category ids');
  }
  const features = new Map();
  for (const [feature, row] of Object.entries(data.features)) {
    if (!whole(row, data.categories.length)) throw new RulesError(`word weights: feature ${feature} must hold one whole number per category`);
    features.set(feature, row);
  }
  return { categories: data.categories, bias: data.bias, features };
}

// Step 7's features of a tab: "h:" + each host label, "p:" + each path word, "t:" + each
// title word, each once.
export function features(url, title) {
  const { host, path } = urlParts(String(url ?? "").trim());
  const out = new Set(host.split(".").filter(Boolean).map((l) => "h:" + l));
  for (const w of words(decodePercent(path))) out.add("p:" + w);
  for (const w of words(String(title ?? ""))) out.add("t:" + w);
  return [...out].sort();
}

// Step 7: the category of the highest bias + known weights (the first on a tie), or null
// when the weights know none of the tab's features.
function guessed(weights, tabFeatures) {
  const known = tabFeatures.map((f) => weights.features.get(f)).filter(Boolean);
  if (!known.length) return null;
  let best = 0;
  const scores = weights.bias.map((b, k) => known.reduce((sum, row) => sum + row[k], b));
  scores.forEach((score, k) => { if (score > scores[best]) best = k; });
  return weights.categories[best];
}

function listedDomains(data) {
  const out = new Map();
  if (data === null) return out;
  if (!data || typeof data !== "object" || data.version !== 1 || !data.domains || typeof data.domains !== "object") {
    throw new RulesError('listed domains: expected an object with "version": 1 and "domains"');
  }
  for (const [category, text] of Object.entries(data.domains)) {
    if (typeof text !== "string") throw new RulesError(`listed domains: the domains of ${category} must be one string`);
    for (const domain of text ? text.split(" ") : []) {
      if (out.has(domain)) throw new RulesError(`listed domains: ${domain} is listed twice`);
      out.set(domain, category);
    }
  }
  return out;
}

// Step 6: the host, then each name left when its first label is dropped, down to two labels.
function listedWinner(rules, host) {
  const labels = host.split(".");
  for (let k = 0; k < labels.length - 1; k++) {
    const category = rules.listed.get(labels.slice(k).join("."));
    if (category !== undefined) return category;
  }
  return null;
}

// normalize.local_server: LOCAL_DEV, LOCAL_NETWORK or null for a lower-cased host (no brackets).
export function localServer(host, scheme = "http", port = null) {
  const explicitPort = port !== null && port !== DEFAULT_PORTS[scheme];
  const ipv4 = IPV4.exec(host);
  const octets = ipv4 ? ipv4.slice(1).map(Number) : null;
  if (LOOPBACK_NAMES.has(host) || DEV_SUFFIXES.some((s) => host.endsWith(s)) || (octets && octets[0] === 127)) {
    return LOCAL_DEV;
  }
  const isPrivate = Boolean(octets) && (octets[0] === 10 || (octets[0] === 172 && octets[1] >= 16 && octets[1] <= 31) ||
    (octets[0] === 192 && octets[1] === 168) || (octets[0] === 169 && octets[1] === 254));
  if (isPrivate || LAN_SUFFIXES.some((s) => host.endsWith(s))) return explicitPort ? LOCAL_DEV : LOCAL_NETWORK;
  return null;
}

// Step 1: {scheme, host, port, path}; a URL that does not parse has an empty host and its
// whole text as the path.
export function urlParts(url) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return { scheme: "", host: "", port: null, path: url };
  }
  const host = parsed.hostname.toLowerCase().replace(/^\[(.*)\]$/, "$1").replace(/\.+$/, "");
  const scheme = parsed.protocol.replace(/:$/, "").toLowerCase();
  // WHATWG URLs leave out a special scheme's default port, as the rules' "no port" means.
  return { scheme, host, port: parsed.port === "" ? null : Number(parsed.port), path: parsed.pathname };
}

// The lower-cased runs of letters and digits (Unicode L* and N*) of `text`.
export function words(text) {
  return text.toLowerCase().match(WORD) || [];
}

// Each maximal run of %XX escapes decoded as UTF-8 when it is valid UTF-8, else kept.
export function decodePercent(text) {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  return text.replace(ESCAPES, (run) => {
    const bytes = new Uint8Array(run.length / 3);
    for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(run.slice(3 * i + 1, 3 * i + 3), 16);
    try {
      return decoder.decode(bytes);
    } catch {
      return run;
    }
  });
}

function domainWinner(rules, host, path) {
  let best = null;
  for (const rule of rules.domains) {
    const [domain, prefix] = rule;
    if ((host === domain || host.endsWith("." + domain)) && path.startsWith(prefix)) {
      if (best === null || domain.length > best[0].length ||
          (domain.length === best[0].length && prefix.length > best[1].length)) {
        best = rule;
      }
    }
  }
  return best;
}

function occurs(keyword, textWords) {
  for (let i = 0; i + keyword.length <= textWords.length; i++) {
    if (keyword.every((w, j) => textWords[i + j] === w)) return true;
  }
  return false;
}

function keywordWinner(rules, textWords) {
  let top = 0;
  let leaders = [];
  for (const [category, keywords] of Object.entries(rules.keywords)) {
    const score = keywords.filter((k) => occurs(k, textWords)).length;
    if (score > top) {
      top = score;
      leaders = [category];
    } else if (score === top) {
      leaders.push(category);
    }
  }
  return top >= 1 && leaders.length === 1 ? leaders[0] : null;
}

// The category id the rules give a tab, or null (rules.py's steps 1-6; with `guess`, step 7
// for a tab they leave).
export function categorise(rules, url, title, { guess = false } = {}) {
  const answer = matched(rules, url, title);
  return answer === null && guess && rules.weights ? guessed(rules.weights, features(url, title)) : answer;
}

function matched(rules, url, title) {
  const { scheme, host, port, path } = urlParts(String(url ?? "").trim());
  if (host && localServer(host, scheme, port) === LOCAL_DEV) return rules.localDev;
  const winner = host ? domainWinner(rules, host, path) : null;
  if (winner !== null && !winner[2]) return winner[3];
  let textWords = words(String(title ?? ""));
  if (!textWords.length) textWords = words(decodePercent(path));
  const keyword = keywordWinner(rules, textWords);
  if (keyword !== null) return keyword;
  if (winner !== null) return winner[3];
  return host ? listedWinner(rules, host) : null;
}
