//! "Import" accepts a JWK, or a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) that is
//! turned into a JWK here; the vault validates the key as for any import. Only the structure
//! is read (a small DER walk); the key material goes to the vault and nowhere else.
use coffer_crypto::b64::{std_decode, url_encode};
use serde_json::{Value, json};

const OID_RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const CURVES: [(&[u8], &str, usize); 4] = [
    (
        &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07],
        "P-256",
        32,
    ),
    (&[0x2B, 0x81, 0x04, 0x00, 0x22], "P-384", 48),
    (&[0x2B, 0x81, 0x04, 0x00, 0x23], "P-521", 66),
    (&[0x2B, 0x81, 0x04, 0x00, 0x0A], "P-256K", 32),
];

const NOT_A_KEY: &str = "The key must be a JWK (JSON) or a PEM private key (\"-----BEGIN PRIVATE KEY-----\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\").";

/// The key as a JWK for `PUT /keys/{name}`.
pub fn to_jwk(text: &str) -> Result<Value, String> {
    let t = text.trim();
    if t.starts_with('{') {
        return serde_json::from_str::<Value>(t)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| "The JWK is not a JSON object.".to_string());
    }
    let (label, der) = pem_body(t).ok_or(NOT_A_KEY)?;
    // The private key's DER is zeroized when dropped.
    let der = coffer_secret::SecretBytes::new(der);
    match label.as_str() {
        "PRIVATE KEY" => pkcs8(der.expose()),
        "RSA PRIVATE KEY" => rsa(der.expose()),
        "EC PRIVATE KEY" => sec1(der.expose(), None),
        _ => Err(NOT_A_KEY.into()),
    }
    .map_err(|e| format!("The PEM key could not be read: {e}"))
}

fn pem_body(t: &str) -> Option<(String, Vec<u8>)> {
    let begin = t.find("-----BEGIN ")?;
    let rest = &t[begin + 11..];
    let (label, rest) = rest.split_once("-----")?;
    let end = rest.find(&format!("-----END {label}-----"))?;
    let b64: String = rest[..end].chars().filter(|c| !c.is_whitespace()).collect();
    Some((label.to_string(), std_decode(&b64)?))
}

/// One DER element: (tag, contents, rest).
fn tlv(b: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let (&tag, b) = b.split_first().ok_or("truncated")?;
    let (&l0, mut b) = b.split_first().ok_or("truncated")?;
    let len = if l0 < 0x80 {
        usize::from(l0)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return Err("bad length".into());
        }
        let mut l = 0usize;
        for &x in &b[..n] {
            l = (l << 8) | usize::from(x);
        }
        b = &b[n..];
        l
    };
    if b.len() < len {
        return Err("truncated".into());
    }
    Ok((tag, &b[..len], &b[len..]))
}

fn expect(b: &[u8], want: u8) -> Result<(&[u8], &[u8]), String> {
    let (t, v, rest) = tlv(b)?;
    if t != want {
        return Err(format!("unexpected DER tag {t:#04x} (wanted {want:#04x})"));
    }
    Ok((v, rest))
}

/// An unsigned big-endian integer without leading zeros, base64url.
fn uint(v: &[u8]) -> String {
    let start = v.iter().position(|&x| x != 0).unwrap_or(v.len());
    url_encode(&v[start..])
}

fn pkcs8(der: &[u8]) -> Result<Value, String> {
    let (seq, _) = expect(der, 0x30)?;
    let (_, rest) = expect(seq, 0x02)?; // version
    let (alg, rest) = expect(rest, 0x30)?;
    let (oid, params) = expect(alg, 0x06)?;
    let (key, _) = expect(rest, 0x04)?;
    if oid == OID_RSA {
        rsa(key)
    } else if oid == OID_EC {
        let (curve, _) = expect(params, 0x06)?;
        sec1(key, Some(curve))
    } else {
        Err("only RSA and EC keys can be imported".into())
    }
}

fn rsa(der: &[u8]) -> Result<Value, String> {
    let (seq, _) = expect(der, 0x30)?;
    let mut rest = seq;
    let mut ints = Vec::new();
    for _ in 0..9 {
        let (v, r) = expect(rest, 0x02)?;
        ints.push(v);
        rest = r;
    }
    let names = ["n", "e", "d", "p", "q", "dp", "dq", "qi"];
    let mut jwk = json!({"kty": "RSA"});
    for (name, v) in names.iter().zip(&ints[1..]) {
        jwk[*name] = json!(uint(v));
    }
    Ok(jwk)
}

fn sec1(der: &[u8], curve: Option<&[u8]>) -> Result<Value, String> {
    let (seq, _) = expect(der, 0x30)?;
    let (_, rest) = expect(seq, 0x02)?;
    let (d, mut rest) = expect(rest, 0x04)?;
    let (mut curve, mut point) = (curve, None);
    while !rest.is_empty() {
        let (t, v, r) = tlv(rest)?;
        match t {
            0xA0 => curve = Some(expect(v, 0x06)?.0),
            0xA1 => point = Some(expect(v, 0x03)?.0),
            _ => {}
        }
        rest = r;
    }
    let (_, crv, size) = CURVES
        .iter()
        .find(|(o, _, _)| Some(*o) == curve)
        .ok_or("the curve is not P-256, P-384, P-521 or P-256K")?;
    // BIT STRING: one byte of unused bits, then 0x04 || X || Y.
    let point = point.ok_or("the key has no public point; export it with its public key")?;
    match point {
        [0, 4, xy @ ..] if xy.len() == 2 * size => Ok(json!({
            "kty": "EC",
            "crv": crv,
            "x": url_encode(&xy[..*size]),
            "y": url_encode(&xy[*size..]),
            "d": url_encode(&pad(d, *size)),
        })),
        _ => Err("the public point is not uncompressed".into()),
    }
}

fn pad(v: &[u8], size: usize) -> Vec<u8> {
    let v = &v[v.len().saturating_sub(size)..];
    let mut out = vec![0u8; size - v.len()];
    out.extend_from_slice(v);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // A throwaway P-256 key (SEC1), generated for this test only.
    const EC_PEM: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEILvWdkWyX2MHB1Hf7Tc0id1vjIS/LtUeIlCNHyeWWLTSoAoGCCqGSM49
AwEHoUQDQgAEQZrSDhl7Xaq5qBTnT69kvkARKxpV7sRncR2KBzy+4l6HrXmYOlUI
wkhv/uiPApNQPy3xKCfdgnIO4P2kX16WNg==
-----END EC PRIVATE KEY-----";
    // A throwaway RSA-1024 key (PKCS#8): the structure only; the vault refuses 1024 bits.
    const RSA_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIICdgIBADANBgkqhkiG9w0BAQEFAASCAmAwggJcAgEAAoGBALwdWddRZaIaPKxC
lf2LYV0sDYQ6xxe/eK/tnpo51N/FtZ9AuUr5OLlWWkUPqc+N9ToAyT1fGQWuFfeI
8Nx5hp0/CD6Gc4M+AurvvXpg523RTicwziucama9hxDlYxmOyQ1Z/cm/UGOfkwSs
JDXPasVJxV8HS8eUUEwbu7Ofh9VZAgMBAAECgYACMKlKG3V+dKW+L6xFXmkMx6WE
o5aLzTvfeHm/O+shi9C4gO1nVQ13Au1cHnmQpAt12Gp/X2sQKN2ymxKKzpNlnih1
yYNyYfeJB9L6TtGTr2cvUcbu3blvLLrI8Qj/mQoovNhd5GZU6zCPcixT+ISIg2rh
sVAPFJV3jcJjnVGPAQJBAOKZj0+cAVBFDxPc19j25rEY0yDfjrdhkIRLwBJLnGr5
CppUAk0yPmoDNo4wk3V4nMKFwjSuFNoEJQFzk/zFR/kCQQDUhYScwr2DExTGvLCw
6VAbjf+GSPyh1IeoTTVfW7jZaL75AG5GwscW3nBC7zli1fbjYiJLJnUcwYmrPpqI
iBBhAkAVQr0shgGli2U3wt/JrpjEgwTEL9WPJStPDmBuFwQNEWLKShmRLqamgbir
rKkZO4DRy4UGNlMkhYEHWtXGwKfZAkBufoT2ZCHYNmGE+rH7KTMnQGrsTKJdGXz2
uj3XuH6hOt6f4+NyEu8kKr6/blWt14Unr+wYmoQlUVLcoA4EkonBAkEAtrXDTQYX
QPW9hmLgPrCrxcpdzbNbMkYMfn/OZ9/cUh+/m5BLkEqvOYEyAo8PhttxAbDVBWRH
yov/rSjyUcZVVg==
-----END PRIVATE KEY-----";

    #[test]
    fn jwk_passes_and_garbage_is_refused() {
        assert_eq!(to_jwk(r#"{"kty":"oct"}"#).ok(), Some(json!({"kty": "oct"})));
        assert!(to_jwk("[1]").is_err());
        assert!(to_jwk("hello").is_err());
        assert!(to_jwk("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----").is_err());
    }

    #[test]
    fn pkcs8_rsa_key_becomes_a_jwk() -> Result<(), String> {
        let jwk = to_jwk(RSA_PEM)?;
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["e"], "AQAB");
        let n =
            coffer_crypto::b64::url_decode(jwk["n"].as_str().unwrap_or_default()).ok_or("b64")?;
        assert_eq!(n.len(), 128);
        for k in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(jwk[k].as_str().is_some_and(|v| !v.is_empty()), "{k}");
        }
        Ok(())
    }

    #[test]
    fn sec1_ec_key_becomes_a_jwk() -> Result<(), String> {
        let jwk = to_jwk(EC_PEM)?;
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        for k in ["x", "y", "d"] {
            let v =
                coffer_crypto::b64::url_decode(jwk[k].as_str().unwrap_or_default()).ok_or("b64")?;
            assert_eq!(v.len(), 32, "{k}");
        }
        Ok(())
    }
}
